"""Reading what the operator wrote, for tests of any tier: conditions, Secret data, and the credential
table through its manifest, the way the relay's watcher reads it. ``kube`` is a ``KubeClient`` (the real
one or ``support.fake_kube.FakeKube``)."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

from mta_operator.api import API_VERSION
from mta_operator.kube.client import KubeClient
from mta_relay import shards


def apply(kube: KubeClient, *objs: dict[str, Any]) -> None:
    """Server-side apply as the field manager ``tests`` (``stringData`` sent as ``data``)."""
    for obj in objs:
        body = copy.deepcopy(obj)
        if "stringData" in body:
            text = body.pop("stringData")
            body["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in text.items()}
        kube.apply(body, manager="tests")


def cr(kube: KubeClient, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    return kube.get(API_VERSION, kind, namespace, name)


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for cond in (obj or {}).get("status", {}).get("conditions", []):
        if cond["type"] == type_:
            return cond
    return {}


def decoded(secret: dict[str, Any] | None) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in ((secret or {}).get("data") or {}).items()}


def table(kube: KubeClient, namespace: str, cluster: str) -> dict[str, dict[str, Any]]:
    """Username → credential entry, read through the manifest as the relay's watcher reads it."""
    manifest = decoded(kube.get("v1", "Secret", namespace, shards.manifest_secret(cluster)))
    if not manifest:
        return {}
    out = {}
    for ref in shards.decode_manifest(manifest[shards.MANIFEST_KEY]):
        text = decoded(kube.get("v1", "Secret", namespace, ref.secret))[ref.key]
        out.update({c["username"]: c for c in json.loads(text)["credentials"]})
    return out
