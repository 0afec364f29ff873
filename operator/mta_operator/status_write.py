"""Writing a custom resource's status subresource, shared by the three reconcilers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .api import API_VERSION, Resource
from .kube_api import ApiError

if TYPE_CHECKING:
    from .controller import Controller


async def patch_status(ctl: Controller, obj: Resource, status: dict[str, Any]) -> dict[str, Any] | None:
    """Patch obj's status with ``status`` unless it already says so. Returns the merged status written, or
    None when nothing was written (no change, or the object was deleted meanwhile)."""
    held = getattr(obj, "status", None)
    current = held.model_dump(mode="json", exclude_none=True) if held else {}
    if all(current.get(k) == v for k, v in status.items()):
        return None
    try:
        await ctl.io(ctl.kube.patch_status, API_VERSION, obj.kind, obj.metadata.namespace,
                     obj.metadata.name, status)
    except ApiError as error:
        if error.status == 404:
            return None
        raise
    return {**current, **status}
