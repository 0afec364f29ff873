"""Validation rules written once: a CEL rule for the API server and the same check in Python.

The CRD schema carries the CEL rule (``x-kubernetes-validations``); pydantic runs the Python mirror, so a
manifest parsed outside the cluster (the relay's local mode, tests) is refused with the same message.
Transition rules (immutability) need the old object and exist only on the API server side.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema as cs

VALIDATIONS = "x-kubernetes-validations"


@dataclass(frozen=True)
class Rule:
    """One ``x-kubernetes-validations`` entry, usable as ``Annotated`` metadata or in ``ApiModel.rules``."""

    cel: str
    message: str
    # Python mirror of `cel`; None only for transition rules, which need oldSelf.
    check: Callable[[Any], bool] | None = field(default=None, compare=False)
    field_path: str | None = None
    reason: str | None = None

    def to_schema(self) -> dict[str, str]:
        entry = {"rule": self.cel, "message": self.message}
        if self.field_path:
            entry["fieldPath"] = self.field_path
        if self.reason:
            entry["reason"] = self.reason
        return entry

    def verify(self, value: Any) -> Any:
        if self.check is not None and not self.check(value):
            raise ValueError(self.message)
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> cs.CoreSchema:
        inner = handler(source)
        return inner if self.check is None else cs.no_info_after_validator_function(self.verify, inner)

    def __get_pydantic_json_schema__(
        self, schema: cs.CoreSchema, handler: GetJsonSchemaHandler,
    ) -> JsonSchemaValue:
        result = handler(schema)
        handler.resolve_ref_schema(result).setdefault(VALIDATIONS, []).append(self.to_schema())
        return result


def immutable(what: str) -> Rule:
    """A transition rule: the field may be set at creation and never changed."""
    return Rule("self == oldSelf", f"{what} is immutable", reason="FieldValueForbidden")


@dataclass(frozen=True)
class UniqueItems:
    """``x-kubernetes-list-type: set`` on a list of scalars, checked in Python too."""

    def _verify(self, items: Sequence[Hashable]) -> Sequence[Hashable]:
        seen: set[Hashable] = set()
        for item in items:
            if item in seen:
                raise ValueError(f"duplicate entry {item!r}")
            seen.add(item)
        return items

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> cs.CoreSchema:
        return cs.no_info_after_validator_function(self._verify, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: cs.CoreSchema, handler: GetJsonSchemaHandler,
    ) -> JsonSchemaValue:
        result = handler(schema)
        handler.resolve_ref_schema(result)["x-kubernetes-list-type"] = "set"
        return result


UNIQUE = UniqueItems()
