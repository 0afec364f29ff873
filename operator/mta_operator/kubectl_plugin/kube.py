"""Reading the cluster the way kubectl does: kubeconfig, current context, its namespace or -n."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from mta_operator.api import GROUP, VERSION

Obj = dict[str, Any]
PLURALS = {"Cluster": "clusters", "SendingDomain": "sendingdomains", "SmtpCredential": "smtpcredentials"}


class NotFound(Exception):
    """A named object does not exist (or cannot be read)."""


@dataclass
class KubeconfigReader:
    """The plugin's read access: an API client from the kubeconfig and the namespace it reads."""

    api: client.ApiClient
    namespace: str | None  # None: all namespaces

    @classmethod
    def connect(cls, kubeconfig: str | None, context: str | None, namespace: str | None,
                all_namespaces: bool) -> KubeconfigReader:
        api = config.new_client_from_config(config_file=kubeconfig, context=context)
        if all_namespaces:
            return cls(api, None)
        if namespace is None:
            contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
            chosen = active if context is None else next(c for c in contexts if c["name"] == context)
            namespace = chosen.get("context", {}).get("namespace") or "default"
        return cls(api, namespace)

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

    def secret_data(self, name: str) -> dict[str, str]:
        """The decoded data of a Secret; the values never leave the caller (no logging here)."""
        try:
            secret = client.CoreV1Api(self.api).read_namespaced_secret(name, self._ns())
        except ApiException as error:
            raise NotFound(f"Secret {name!r} in namespace {self._ns()}: {error.reason}") from None
        return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}

    def _ns(self) -> str:
        if self.namespace is None:
            raise NotFound("this command needs one namespace, not --all-namespaces")
        return self.namespace
