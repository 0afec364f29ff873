"""Build the CustomResourceDefinition of a kind from its model: the one source of truth for crds/."""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel

from .base import CATEGORY, GROUP, VERSION, Resource
from .rules import VALIDATIONS
from .schema import Schema, of_model


def root_schema(kind: type[Resource]) -> Schema:
    info = kind.crd
    fields = kind.model_fields
    root: Schema = {
        "description": info.description,
        "type": "object",
        "properties": {
            "apiVersion": {"description": "mta-operator.io/v1alpha1", "type": "string"},
            "kind": {"description": f"{info.kind}", "type": "string"},
            "metadata": {"type": "object"},
            "spec": {**of_model(_model(fields["spec"].annotation)),
                     "description": fields["spec"].description},
            "status": {**of_model(_status_model(kind)), "description": fields["status"].description},
        },
        "required": ["spec"],
    }
    if info.root_rules:
        root[VALIDATIONS] = [rule.to_schema() for rule in info.root_rules]
    return root


def _status_model(kind: type[Resource]) -> Any:
    annotation = kind.model_fields["status"].annotation
    # `XStatus | None`: the model is the non-None member.
    return next(arg for arg in typing.get_args(annotation) if arg is not type(None))


def _model(annotation: Any) -> type[BaseModel]:
    """A field's annotation that is a model (``spec``: the kind's spec model)."""
    assert isinstance(annotation, type)
    assert issubclass(annotation, BaseModel)
    return annotation


def build(kind: type[Resource]) -> dict[str, Any]:
    info = kind.crd
    subresources: dict[str, Any] = {"status": {}}
    if info.scale:
        subresources["scale"] = dict(info.scale)
    version: dict[str, Any] = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": root_schema(kind)},
        "subresources": subresources,
        "additionalPrinterColumns": [column.to_crd() for column in info.columns],
    }
    if info.selectable_fields:
        version["selectableFields"] = [{"jsonPath": path} for path in info.selectable_fields]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": info.name, "labels": {"app.kubernetes.io/part-of": "mta-operator"}},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": [info.short_name],
                "categories": [CATEGORY],
            },
            "scope": "Namespaced",
            "versions": [version],
        },
    }
