"""The thin, synchronous REST layer over the kubernetes client: get, list, create, server-side apply, status
merge patch, delete, Events. Counts calls per verb (the benchmark reads them). Errors never quote bodies."""

from __future__ import annotations

import json
import secrets
import threading
from collections import Counter
from typing import Any
from urllib.parse import urlencode

import urllib3
from kubernetes import client as k8s

from mta_operator.naming import FIELD_MANAGER

Obj = dict[str, Any]
TIMEOUT = (5, 30)  # connect, read: an API outage fails fast and the work queue retries


class ApiError(Exception):
    """An API request failed. The message has the status and the server's reason, never the request body."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason


def _base(api_version: str) -> str:
    return f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"


def plural(kind: str) -> str:
    """The resource name of a kind the operator touches (StorageClass → storageclasses)."""
    lower = kind.lower()
    return lower + ("es" if lower.endswith("s") else "s")


def path(api_version: str, kind: str, namespace: str | None, name: str | None = None,
         sub: str | None = None) -> str:
    parts = [_base(api_version)]
    if namespace:
        parts.append(f"namespaces/{namespace}")
    parts.append(plural(kind))
    if name:
        parts.append(name)
    if sub:
        parts.append(sub)
    return "/".join(parts)


class KubeClient:
    """The operator's API client: one method per REST verb it uses, each a blocking call (the controller
    runs them in its pool), every request counted in ``calls``."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.api = api_client
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def request(self, method: str, url_path: str, body: Any = None, query: dict[str, str] | None = None,
                content_type: str = "application/json") -> Obj | None:
        with self._lock:
            self.calls[method] += 1
        full = url_path + ("?" + urlencode(query) if query else "")
        m, url, headers, data, post = self.api.param_serialize(
            method, full, header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body, auth_settings=["BearerToken"])
        try:
            resp = self.api.call_api(m, url, headers, data, post, _request_timeout=TIMEOUT)
            resp.read()
        except k8s.ApiException as error:
            raise ApiError(error.status or 0, str(error.reason), "request failed") from None
        except (OSError, urllib3.exceptions.HTTPError) as error:  # refused/reset: the API server is away
            raise ApiError(0, "Unreachable", type(error).__name__) from None
        raw: bytes = resp.data or b""
        if resp.status >= 300:
            try:
                detail = json.loads(raw)
            except ValueError:
                detail = {}
            raise ApiError(resp.status, str(detail.get("reason", resp.reason)),
                           str(detail.get("message", "")))
        return json.loads(raw) if raw else None

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
        try:
            return self.request("GET", path(api_version, kind, namespace, name))
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def list(self, api_version: str, kind: str, namespace: str | None = None,
             label_selector: str | None = None) -> list[Obj]:
        query = {"labelSelector": label_selector} if label_selector else {}
        items: list[Obj] = []
        while True:
            page = self.request("GET", path(api_version, kind, namespace), query={**query, "limit": "500"})
            assert page is not None
            items += page.get("items", [])
            token = page.get("metadata", {}).get("continue")
            if not token:
                return items
            query["continue"] = token

    def create(self, obj: Obj) -> Obj:
        meta = obj["metadata"]
        out = self.request("POST", path(obj["apiVersion"], obj["kind"], meta.get("namespace")), obj,
                           query={"fieldManager": FIELD_MANAGER})
        assert out is not None
        return out

    def apply(self, obj: Obj, manager: str = FIELD_MANAGER) -> Obj:
        """Server-side apply as the one field manager; force: the operator owns these fields."""
        meta = obj["metadata"]
        out = self.request("PATCH", path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"]),
                           obj, query={"fieldManager": manager, "force": "true"},
                           content_type="application/apply-patch+yaml")
        assert out is not None
        return out

    def replace(self, obj: Obj) -> Obj:
        """PUT with the object's resourceVersion: 409 when someone wrote it since it was read."""
        meta = obj["metadata"]
        url = path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        out = self.request("PUT", url, obj, query={"fieldManager": FIELD_MANAGER})
        assert out is not None
        return out

    def patch_status(self, api_version: str, kind: str, namespace: str, name: str, status: Obj) -> None:
        self.request("PATCH", path(api_version, kind, namespace, name, "status"), {"status": status},
                     content_type="application/merge-patch+json")

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        try:
            self.request("DELETE", path(api_version, kind, namespace, name))
        except ApiError as error:
            if error.status != 404:
                raise

    def has_api(self, group_version: str) -> bool:
        try:
            self.request("GET", f"/apis/{group_version}")
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    def event(self, regarding: Obj, type_: str, reason: str, note: str, now: str) -> None:
        meta = regarding["metadata"]
        body = {
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{secrets.token_hex(8)}", "namespace": meta["namespace"]},
            "eventTime": now.replace("Z", ".000000Z"), "reportingController": "mta-operator.io/operator",
            "reportingInstance": "mta-operator", "action": "Reconcile", "type": type_, "reason": reason,
            "note": note[:1024],
            "regarding": {"apiVersion": regarding["apiVersion"], "kind": regarding["kind"],
                          "name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid")},
        }
        self.request("POST", f"/apis/events.k8s.io/v1/namespaces/{meta['namespace']}/events", body)
