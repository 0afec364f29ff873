"""Applying desired children: refuse objects we do not own, server-side apply the rest, and skip what was
applied unchanged before (per process), so a re-run of a reconcile costs no API calls."""

from __future__ import annotations

import hashlib
import json

from .client import KubeClient, Obj


class NotOwned(Exception):
    """A child's name is taken by an object that is not ours; the message says how to resolve it."""


def owner_uids(obj: Obj) -> set[str]:
    return {ref.get("uid", "") for ref in obj.get("metadata", {}).get("ownerReferences", [])}


def _key(obj: Obj) -> tuple[str, str, str, str]:
    meta = obj["metadata"]
    return obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"]


def _digest(obj: Obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


class Applier:
    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube
        self._applied: dict[tuple[str, str, str, str], str] = {}
        self._owner: dict[tuple[str, str, str, str], str] = {}  # owner UID we last applied it for

    def ensure(self, obj: Obj) -> bool:
        """Apply ``obj`` unless it is unchanged since our last apply; True when an apply was sent."""
        key = _key(obj)
        digest = _digest(obj)
        if self._applied.get(key) == digest:
            return False
        owner = obj["metadata"]["ownerReferences"][0]
        if self._owner.get(key) != owner["uid"]:  # checked once per process and owner, not per write
            live = self.kube.get(*key)
            if live is not None and owner["uid"] not in owner_uids(live):
                raise NotOwned(f"{obj['kind']} {key[3]} exists and is not owned by {owner['kind']} "
                               f"{owner['name']}: delete or rename it, the operator does not adopt objects")
        self.kube.apply(obj)
        self._applied[key] = digest
        self._owner[key] = owner["uid"]
        return True

    def remove(self, api_version: str, kind: str, namespace: str, name: str, owner_uid: str) -> None:
        """Delete a child that is no longer wanted, only if it is ours."""
        key = (api_version, kind, namespace, name)
        live = self.kube.get(*key)
        if live is not None and owner_uid in owner_uids(live):
            self.kube.delete(*key)
        self._applied.pop(key, None)
        self._owner.pop(key, None)

    def forget(self, namespace: str, name_prefix: str = "") -> None:
        """Next ensure() re-checks and re-applies (a child may have been deleted or edited)."""
        for key in [k for k in self._applied if k[2] == namespace and k[3].startswith(name_prefix)]:
            del self._applied[key]
            self._owner.pop(key, None)

    def forget_all(self) -> None:
        self._applied.clear()
        self._owner.clear()
