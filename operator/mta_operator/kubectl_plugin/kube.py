"""Reading the cluster the way kubectl does: kubeconfig, current context, its namespace or -n."""

from __future__ import annotations

import base64
import builtins
import json
from dataclasses import dataclass
from typing import Any, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from mta_operator.api import GROUP, VERSION
from mta_operator.api.reasons import ConditionType

Obj = dict[str, Any]
PLURALS = {"Cluster": "clusters", "SendingDomain": "sendingdomains", "SmtpCredential": "smtpcredentials"}


class NotFound(Exception):
    """A named object does not exist (or cannot be read)."""


@dataclass
class KubeconfigReader:
    """The plugin's read access: an API client from the kubeconfig and the namespace it reads."""

    api: client.ApiClient
    namespace: str | None  # None: all namespaces
    user: str = ""  # the kubeconfig user of the context in use (who asks, for the MTAs' records)

    @classmethod
    def connect(cls, kubeconfig: str | None, context: str | None, namespace: str | None,
                all_namespaces: bool) -> KubeconfigReader:
        api = config.new_client_from_config(config_file=kubeconfig, context=context)
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
        chosen = active if context is None else next(c for c in contexts if c["name"] == context)
        settings = chosen.get("context") or {}
        user = str(settings.get("user") or "")
        if all_namespaces:
            return cls(api, None, user)
        return cls(api, namespace or settings.get("namespace") or "default", user)

    def list(self, kind: str) -> list[Obj]:
        api = client.CustomObjectsApi(self.api)
        if self.namespace is None:
            result = api.list_cluster_custom_object(GROUP, VERSION, PLURALS[kind])
        else:
            result = api.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURALS[kind])
        listed = cast(Obj, result)  # the generated client says ``object``; the body is a JSON object
        return sorted(listed["items"], key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"]))

    def get(self, kind: str, name: str) -> Obj:
        try:
            return cast(Obj, client.CustomObjectsApi(self.api).get_namespaced_custom_object(
                GROUP, VERSION, self._ns(), PLURALS[kind], name))
        except ApiException as error:
            raise NotFound(f"{kind} {name!r} in namespace {self._ns()}: {error.reason}") from None

    def patch(self, kind: str, name: str, patch: Obj) -> Obj:
        """A JSON merge patch of one of our custom resources (the plugin's only write: a spec change the
        operator answers)."""
        try:
            return cast(Obj, client.CustomObjectsApi(self.api).patch_namespaced_custom_object(
                GROUP, VERSION, self._ns(), PLURALS[kind], name, patch))
        except ApiException as error:
            raise NotFound(f"{kind} {name!r} in namespace {self._ns()}: {error.reason}: "
                           f"{_api_message(error)}") from None

    def secret_data(self, name: str) -> dict[str, str]:
        """The decoded data of a Secret; the values never leave the caller (no logging here)."""
        try:
            secret = client.CoreV1Api(self.api).read_namespaced_secret(name, self._ns())
        except ApiException as error:
            raise NotFound(f"Secret {name!r} in namespace {self._ns()}: {error.reason}") from None
        return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}

    def pods(self, selector: dict[str, str]) -> builtins.list[str]:
        """Names of the pods in the namespace that carry every label of ``selector``."""
        text = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        try:
            listed = client.CoreV1Api(self.api).list_namespaced_pod(self._ns(), label_selector=text)
        except ApiException as error:
            raise NotFound(f"pods in namespace {self._ns()}: {error.reason}") from None
        return sorted(str(p.metadata.name) for p in listed.items if p.metadata is not None)

    def ready_pods(self, selector: dict[str, str]) -> builtins.list[str]:
        """Names of the pods that carry every label of ``selector`` and whose Ready condition is True."""
        text = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        try:
            listed = client.CoreV1Api(self.api).list_namespaced_pod(self._ns(), label_selector=text)
        except ApiException as error:
            raise NotFound(f"pods in namespace {self._ns()}: {error.reason}") from None
        # A pod's Ready condition has the name of ours (both follow the Kubernetes convention).
        return sorted(str(p.metadata.name) for p in listed.items if p.metadata is not None and any(
            c.type == ConditionType.READY and c.status == "True"
            for c in (p.status and p.status.conditions) or []))

    def pod_proxy(self, method: str, pod: str, port: str, path: str, query: builtins.list[tuple[str, str]],
                  headers: dict[str, str], body: object = None, timeout: float = 15) -> tuple[int, bytes]:
        """A request through the API server's pod proxy (``pods/proxy``, with the user's own RBAC: GET needs
        ``get``, POST ``create``, DELETE ``delete``); ``port`` as the proxy names it, such as
        ``https:8080``; ``body`` is sent as JSON. (status, body); status 0 if the call failed."""
        ns = self._ns()
        extra = {"Content-Type": "application/json"} if body is not None else {}
        serialized = self.api.param_serialize(
            method=method, resource_path=f"/api/v1/namespaces/{{namespace}}/pods/{{name}}/proxy/{path}",
            path_params={"namespace": ns, "name": f"{port.split(':')[0]}:{pod}:{port.split(':')[1]}"},
            query_params=query, header_params={"Accept": "application/json", **extra, **headers},
            body=body, auth_settings=["BearerToken"])
        try:
            response = self.api.call_api(*serialized, _request_timeout=timeout)
            response.read()
        except (ApiException, OSError) as error:
            # The exception's text is the URL and the reason, never the request's headers (the token).
            return getattr(error, "status", 0) or 0, str(error).encode()
        return response.status, response.data or b""

    def _ns(self) -> str:
        if self.namespace is None:
            raise NotFound("this command needs one namespace, not --all-namespaces")
        return self.namespace


def _api_message(error: ApiException) -> str:
    """The API server's message (a CEL rule's, for example); never a request body."""
    try:
        return str(json.loads(error.body or "{}").get("message", ""))
    except ValueError:
        return ""
