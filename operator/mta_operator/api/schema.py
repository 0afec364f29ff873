"""Turn a pydantic JSON schema into a structural OpenAPI v3 schema the API server accepts.

$refs are inlined, ``anyOf [X, null]`` becomes plain X (optional), ``anyOf [integer, string]`` becomes
``x-kubernetes-int-or-string``, titles go. Optional fields are not ``nullable``: the API server prunes an
explicit null of a non-nullable field, so ``field: null`` means unset (None in Python) and no CEL rule
has to handle a stored null.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from .rules import VALIDATIONS

Schema = dict[str, Any]
NULL = {"type": "null"}
# Readable key order in the generated YAML; anything else keeps pydantic's order after these.
KEY_ORDER = ("description", "type", "format", "enum", "default", "minimum", "maximum", "minLength",
             "maxLength", "pattern", "minItems", "maxItems", "maxProperties", "x-kubernetes-int-or-string",
             "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "items", "additionalProperties",
             "properties", "required", VALIDATIONS)

RULE_ORDER = ("rule", "message", "fieldPath", "reason")


class UnsupportedSchema(ValueError):
    """The model uses a construct a structural schema cannot express."""


def of_model(model: type[BaseModel]) -> Schema:
    """Structural schema of a model (validation mode, camelCase names)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return structural(raw, raw.get("$defs", {}))


def structural(node: Schema, defs: dict[str, Schema]) -> Schema:
    node = {k: v for k, v in node.items() if k not in ("title", "$defs")}
    if "$ref" in node:
        target = structural(defs[node.pop("$ref").rsplit("/", 1)[-1]], defs)
        return _merge(target, structural(node, defs))
    if "anyOf" in node:
        return _merge(_any_of(node.pop("anyOf"), node, defs), structural(node, defs))
    if "properties" in node:
        node["properties"] = {name: structural(sub, defs) for name, sub in node["properties"].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            node[key] = structural(node[key], defs)
    if VALIDATIONS in node:
        node[VALIDATIONS] = [{k: r[k] for k in RULE_ORDER if k in r} for r in node[VALIDATIONS]]
    if "enum" in node and "type" not in node:
        node["type"] = "integer" if all(isinstance(v, int) for v in node["enum"]) else "string"
    return {k: node[k] for k in sorted(node, key=_rank)}


def _any_of(options: list[Schema], node: Schema, defs: dict[str, Schema]) -> Schema:
    rest = [o for o in options if o != NULL]
    if len(rest) == 1:
        if node.get("default", 0) is None:
            del node["default"]
        return structural(rest[0], defs)
    if sorted(o.get("type", "") for o in rest) == ["integer", "string"]:
        return {"x-kubernetes-int-or-string": True}
    raise UnsupportedSchema(f"anyOf cannot be made structural: {options}")


def _merge(base: Schema, over: Schema) -> Schema:
    """A referenced schema with the referencing field's keys on top; validation rules add up."""
    merged = {**base, **over}
    rules = base.get(VALIDATIONS, []) + over.get(VALIDATIONS, [])
    if rules:
        merged[VALIDATIONS] = rules
    return {k: merged[k] for k in sorted(merged, key=_rank)}


def _rank(key: str) -> int:
    return KEY_ORDER.index(key) if key in KEY_ORDER else len(KEY_ORDER)
