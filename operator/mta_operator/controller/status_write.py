"""Writing a custom resource's status subresource, for the three reconcilers (the ``Controller`` offers
it to them as ``Context.patch_status`` and ``Context.patch_and_remember``)."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, TypeVar

from mta_operator.api import API_VERSION, Resource
from mta_operator.kube.client import ApiError
from mta_operator.reconcile.context import Context
from mta_operator.reconcile.index import Key


async def patch_status(ctx: Context, obj: Resource, status: dict[str, Any]) -> dict[str, Any] | None:
    """Patch obj's status with ``status`` unless it already says so. Returns the merged status written, or
    None when nothing was written (no change, or the object was deleted meanwhile)."""
    held = getattr(obj, "status", None)
    current = held.model_dump(mode="json", exclude_none=True) if held else {}
    if all(current.get(k) == v for k, v in status.items()):
        return None
    try:
        await ctx.io(ctx.kube.patch_status, API_VERSION, obj.kind, obj.metadata.namespace or "",
                     obj.metadata.name, status)
    except ApiError as error:
        if error.status == 404:
            return None
        raise
    return {**current, **status}


R = TypeVar("R", bound=Resource)


async def patch_and_remember(ctx: Context, obj: R, status: dict[str, Any],
                             held: MutableMapping[Key, R]) -> None:
    """``patch_status``, then keep the index's copy (``held``) in step: the watch event confirming the
    write may come later than our next look. Not if the index holds a newer object by then."""
    written = await patch_status(ctx, obj, status)
    key = (obj.metadata.namespace or "", obj.metadata.name)
    if written is not None and held.get(key) is obj:
        held[key] = type(obj).model_validate({**obj.model_dump(mode="json"), "status": written})
