"""An in-memory stand-in for the operator's API seam, ``mta_operator.kube.client.KubeClient``: the verbs the
controller, the reconcilers, the applier and the leader elector call (get, list, create, apply, replace,
patch_status, delete, has_api, event), backed by a dict and with the API server's semantics they rely on:

- every write bumps a global ``resourceVersion``; a create sets ``uid``, ``creationTimestamp`` and
  ``generation`` 1, and a write that changes anything outside ``metadata`` and ``status`` bumps
  ``generation``;
- ``create`` of an existing object is 409 ``AlreadyExists``; ``replace`` (and ``apply`` when the body
  carries a ``resourceVersion``) with a stale ``resourceVersion`` is 409 ``Conflict``; ``patch_status`` of a
  missing object is 404 ``NotFound``; ``get`` answers None and ``delete`` nothing for a missing object, as
  the real client does; all errors are the real ``ApiError``;
- server-side apply per field manager: the applied fields are set (``force``: taken from other managers),
  fields this manager applied before and leaves out now are removed, other managers' fields are kept; maps
  merge key by key, lists are atomic;
- ``status`` is written only through ``patch_status`` (a JSON merge patch), as with a status subresource;
- deleting an object deletes its dependents (``ownerReferences``), as the garbage collector does;
- label selectors: ``k=v``, ``k!=v``, ``k``, ``!k``, ``k in (a,b)``, ``k notin (a,b)``;
- watch events (``ADDED``/``MODIFIED``/``DELETED``) reach subscribers on their event loop, later than the
  write, as a watch does.

``fail(...)`` injects failures: a matching call raises ``ApiError`` before it changes anything. The fake is
thread-safe: the controller runs these calls in its thread pool."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import itertools
import re
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from mta_operator.kube.client import ApiError, KubeClient
from mta_operator.naming import FIELD_MANAGER

Obj = dict[str, Any]
ObjKey = tuple[str, str, str, str]  # apiVersion, kind, namespace, name
Path = tuple[str, ...]
WatchCallback = Callable[[str, str, Obj], None]  # kind, event type, object

VERBS = {"get": "GET", "list": "GET", "has_api": "GET", "create": "POST", "event": "POST",
         "apply": "PATCH", "patch_status": "PATCH", "replace": "PUT", "delete": "DELETE"}
_SELECTOR_PART = re.compile(r"\s*([^,(]+(?:\([^)]*\))?)\s*(?:,|$)")


@dataclass
class Failure:
    """Calls of ``verb`` (a ``KubeClient`` method name) on matching objects raise ``ApiError(status)``;
    ``times`` None: until ``heal()``."""

    verb: str
    kind: str | None
    name: str | None
    status: int
    times: int | None
    raised: int = 0


def _leaves(obj: Any, prefix: Path = ()) -> Iterator[Path]:
    """Paths of the fields an applied config sets: maps descend, anything else is one field."""
    if isinstance(obj, dict) and obj:
        for k, v in obj.items():
            yield from _leaves(v, (*prefix, k))
    else:
        yield prefix


def _set(target: Obj, path: Path, value: Any) -> None:
    for part in path[:-1]:
        nxt = target.get(part)
        if not isinstance(nxt, dict):
            nxt = target[part] = {}
        target = nxt
    target[path[-1]] = copy.deepcopy(value)


def _unset(target: Obj, path: Path) -> None:
    parents = []
    for part in path[:-1]:
        nxt = target.get(part)
        if not isinstance(nxt, dict):
            return
        parents.append((target, part))
        target = nxt
    target.pop(path[-1], None)
    for parent, part in reversed(parents):  # an emptied map goes too, as a pruned field does
        if parent[part]:
            break
        del parent[part]


def _value(obj: Obj, path: Path) -> Any:
    for part in path:
        obj = obj[part]
    return obj


def _merge_patch(target: Obj, patch: Obj) -> Obj:
    """RFC 7386, as the API server applies ``application/merge-patch+json``."""
    out = dict(target)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge_patch(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _body(obj: Obj) -> Obj:
    """What generation counts: everything but metadata and status."""
    return {k: v for k, v in obj.items() if k not in {"metadata", "status"}}


def matches(selector: str | None, labels: dict[str, str]) -> bool:
    """Whether ``labels`` satisfy a label selector in the API's text form."""
    if not selector:
        return True
    for part in (m.group(1).strip() for m in _SELECTOR_PART.finditer(selector) if m.group(1).strip()):
        if (set_op := re.fullmatch(r"(\S+)\s+(in|notin)\s+\(([^)]*)\)", part)) is not None:
            key, op, values = set_op.groups()
            inside = labels.get(key) in {v.strip() for v in values.split(",")}
            if inside != (op == "in"):
                return False
        elif "!=" in part:
            key, value = part.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in part:
            key, value = part.split("=", 1)
            if labels.get(key.strip().rstrip("=")) != value.strip().lstrip("="):
                return False
        elif part.startswith("!"):
            if part[1:] in labels:
                return False
        elif part not in labels:
            return False
    return True


class FakeKube(KubeClient):
    """A dict-backed ``KubeClient``. ``objects`` holds the stored objects by (apiVersion, kind, namespace,
    name); ``posted_events`` the Events posted; ``calls`` counts requests per HTTP verb as the real one."""

    def __init__(self, apis: set[str] | None = None, clock: Callable[[], dt.datetime] | None = None) -> None:
        # No ApiClient: every verb is served here, and ``request`` refuses anything that is not.
        self.calls: Counter[str] = Counter()
        self.objects: dict[ObjKey, Obj] = {}
        self.posted_events: list[Obj] = []
        self.log: list[tuple[str, str, str]] = []  # (verb, kind, name) of every call, in order
        self.apis = apis if apis is not None else {"v1", "apps/v1", "policy/v1", "storage.k8s.io/v1"}
        self._managed: dict[ObjKey, dict[str, set[Path]]] = {}  # field manager → fields it applied
        self._versions = itertools.count(1)
        # Creation times one second apart, so "oldest first" is decided by the order of creation.
        start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        seconds = itertools.count()
        self._clock = clock or (lambda: start + dt.timedelta(seconds=next(seconds)))
        self._lock = threading.RLock()
        self._failures: list[Failure] = []
        self._watchers: list[tuple[asyncio.AbstractEventLoop, WatchCallback]] = []

    # --- test controls ---

    def fail(self, verb: str, kind: str | None = None, name: str | None = None, status: int = 500,
             times: int | None = None) -> Failure:
        """From now on, ``verb`` calls on objects of ``kind`` named ``name`` (None: any) raise
        ``ApiError(status)`` without changing anything, ``times`` times or until ``heal``."""
        failure = Failure(verb, kind, name, status, times)
        with self._lock:
            self._failures.append(failure)
        return failure

    def heal(self) -> None:
        with self._lock:
            self._failures.clear()

    def watch(self, callback: WatchCallback) -> None:
        """Deliver every object as ``ADDED``, then every later change, to ``callback`` on the running event
        loop (soon, not during the write), as a watch that starts with a list does."""
        loop = asyncio.get_running_loop()
        with self._lock:
            self._watchers.append((loop, callback))
            for obj in self.objects.values():
                loop.call_soon(callback, obj["kind"], "ADDED", copy.deepcopy(obj))

    def unwatch(self) -> None:
        """Stop every watch (an operator process that ends)."""
        with self._lock:
            self._watchers.clear()

    def stored(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
        """The stored object, without counting a call or applying failures."""
        with self._lock:
            found = self.objects.get((api_version, kind, namespace, name))
            return copy.deepcopy(found) if found is not None else None

    # --- internals ---

    def _check(self, verb: str, kind: str, name: str | None) -> None:
        with self._lock:
            self.calls[VERBS[verb]] += 1
            self.log.append((verb, kind, name or ""))
            for failure in self._failures:
                if failure.verb != verb or failure.kind not in {None, kind} \
                        or failure.name not in {None, name}:
                    continue
                if failure.times is not None and failure.raised >= failure.times:
                    continue
                failure.raised += 1
                raise ApiError(failure.status, "InternalError" if failure.status >= 500 else "Injected",
                               f"injected failure of {verb} {kind} {name or ''}".strip())

    def _notify(self, event_type: str, obj: Obj) -> None:
        for loop, callback in self._watchers:
            if not loop.is_closed():
                loop.call_soon_threadsafe(callback, obj["kind"], event_type, copy.deepcopy(obj))

    def _store(self, key: ObjKey, obj: Obj, created: bool) -> Obj:
        obj["metadata"]["resourceVersion"] = str(next(self._versions))
        self.objects[key] = obj
        self._notify("ADDED" if created else "MODIFIED", obj)
        return copy.deepcopy(obj)

    def _new(self, key: ObjKey, obj: Obj) -> Obj:
        meta = obj.setdefault("metadata", {})
        meta.update(uid=str(uuid.uuid4()), generation=1,
                    creationTimestamp=self._clock().strftime("%Y-%m-%dT%H:%M:%SZ"))
        if key[2]:
            meta["namespace"] = key[2]
        obj.pop("status", None)  # status is written through its subresource only
        return obj

    def _update(self, key: ObjKey, old: Obj, new: Obj) -> Obj:
        for field in ("uid", "creationTimestamp", "generation"):
            new["metadata"][field] = old["metadata"][field]
        new["status"] = copy.deepcopy(old.get("status"))
        if new["status"] is None:
            del new["status"]
        if _body(new) != _body(old):
            new["metadata"]["generation"] = old["metadata"]["generation"] + 1
        if new == old:
            return copy.deepcopy(old)  # a no-op write stores nothing and sends no event
        return self._store(key, new, created=False)

    @staticmethod
    def _key(obj: Obj) -> ObjKey:
        meta = obj["metadata"]
        return obj["apiVersion"], obj["kind"], meta.get("namespace") or "", meta["name"]

    # --- the KubeClient verbs ---

    def request(self, method: str, url_path: str, body: Any = None, query: dict[str, str] | None = None,
                content_type: str = "application/json") -> Obj | None:
        raise NotImplementedError(f"FakeKube serves KubeClient's verbs, not raw {method} {url_path}")

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
        self._check("get", kind, name)
        return self.stored(api_version, kind, namespace, name)

    def list(self, api_version: str, kind: str, namespace: str | None = None,
             label_selector: str | None = None) -> list[Obj]:
        self._check("list", kind, None)
        with self._lock:
            return [copy.deepcopy(o) for (a, k, ns, _), o in sorted(self.objects.items())
                    if a == api_version and k == kind and (not namespace or ns == namespace)
                    and matches(label_selector, o["metadata"].get("labels") or {})]

    def create(self, obj: Obj) -> Obj:
        key = self._key(obj)
        self._check("create", key[1], key[3])
        with self._lock:
            if key in self.objects:
                raise ApiError(409, "AlreadyExists", f'{key[1]} "{key[3]}" already exists')
            return self._store(key, self._new(key, copy.deepcopy(obj)), created=True)

    def apply(self, obj: Obj, manager: str = FIELD_MANAGER) -> Obj:
        key = self._key(obj)
        self._check("apply", key[1], key[3])
        applied = copy.deepcopy(obj)
        applied.pop("status", None)
        meta = applied["metadata"]
        wanted_version = meta.pop("resourceVersion", None)
        for field in ("uid", "creationTimestamp", "generation", "managedFields"):
            meta.pop(field, None)
        fields = {p for p in _leaves(applied) if p[:1] not in {("apiVersion",), ("kind",)}}
        with self._lock:
            old = self.objects.get(key)
            if wanted_version is not None and (old is None or old["metadata"]["resourceVersion"]
                                               != wanted_version):
                raise ApiError(409, "Conflict", "the object has been modified")
            managers = self._managed.setdefault(key, {})
            new = copy.deepcopy(old) if old is not None else self._new(key, {"metadata": {}})
            others = set().union(*(f for m, f in managers.items() if m != manager))
            for path in managers.get(manager, set()) - fields - others:
                _unset(new, path)
            for path in fields:
                _set(new, path, _value(applied, path))
            new["apiVersion"], new["kind"] = applied["apiVersion"], applied["kind"]
            for m in managers:  # force: the applied fields are this manager's now
                managers[m] -= fields
            managers[manager] = fields
            if old is None:
                return self._store(key, new, created=True)
            return self._update(key, old, new)

    def replace(self, obj: Obj) -> Obj:
        key = self._key(obj)
        self._check("replace", key[1], key[3])
        with self._lock:
            old = self.objects.get(key)
            if old is None:
                raise ApiError(404, "NotFound", f'{key[1]} "{key[3]}" not found')
            if obj["metadata"].get("resourceVersion") != old["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", "the object has been modified; apply your changes to the "
                                                "latest version and try again")
            return self._update(key, old, copy.deepcopy(obj))

    def patch_status(self, api_version: str, kind: str, namespace: str, name: str, status: Obj) -> None:
        self._check("patch_status", kind, name)
        key = (api_version, kind, namespace, name)
        with self._lock:
            old = self.objects.get(key)
            if old is None:
                raise ApiError(404, "NotFound", f'{kind} "{name}" not found')
            new = copy.deepcopy(old)
            new["status"] = _merge_patch(old.get("status") or {}, status)
            if new != old:
                self._store(key, new, created=False)

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        self._check("delete", kind, name)
        with self._lock:
            self._delete((api_version, kind, namespace, name))

    def _delete(self, key: ObjKey) -> None:
        gone = self.objects.pop(key, None)
        self._managed.pop(key, None)
        if gone is None:
            return
        self._notify("DELETED", gone)
        uid = gone["metadata"]["uid"]
        for dependent in [k for k, o in self.objects.items()
                          if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences", []))]:
            self._delete(dependent)

    def has_api(self, group_version: str) -> bool:
        self._check("has_api", "", group_version)
        return group_version in self.apis

    def event(self, regarding: Obj, type_: str, reason: str, note: str, now: str) -> None:
        self._check("event", "Event", regarding["metadata"]["name"])
        with self._lock:
            self.posted_events.append({"regarding": copy.deepcopy(regarding), "type": type_,
                                       "reason": reason, "note": note, "eventTime": now})

    # --- for tests: writes as a user makes them ---

    def delete_now(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        """A user's delete, not counted as the operator's call."""
        with self._lock:
            self._delete((api_version, kind, namespace, name))
