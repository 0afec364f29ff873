"""Metadata every child carries: name, namespace, labels and the controller ownerReference that lets
garbage collection cascade and tells the apply layer the object is ours."""

from __future__ import annotations

import base64
from typing import Any

from mta_operator.api import Resource

Obj = dict[str, Any]


def owner_reference(owner: Resource) -> Obj:
    return {"apiVersion": owner.api_version, "kind": owner.kind, "name": owner.metadata.name,
            "uid": owner.metadata.uid, "controller": True, "blockOwnerDeletion": True}


def child(api_version: str, kind: str, name: str, owner: Resource, labels: dict[str, str],
          annotations: dict[str, str] | None = None) -> Obj:
    metadata: Obj = {"name": name, "namespace": owner.metadata.namespace, "labels": dict(labels),
                     "ownerReferences": [owner_reference(owner)]}
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata}


def secret(name: str, owner: Resource, labels: dict[str, str], string_data: dict[str, str],
           type_: str = "Opaque") -> Obj:
    # data, not stringData: stringData is write-only, so a later diff against the live object would fail.
    obj = child("v1", "Secret", name, owner, labels)
    obj["type"] = type_
    obj["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in sorted(string_data.items())}
    return obj
