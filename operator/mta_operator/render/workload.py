"""The MTA pods: ServiceAccount, the least-privilege Role of the relay's config watcher, and the Deployment
(Pod Security "restricted", probes, topology spread, a drain-sized grace period)."""

from __future__ import annotations

from dataclasses import dataclass

from mta_operator import naming
from mta_operator.api import Cluster

from .meta import Obj, child
from .relay_config import (
    CONFIG_DIR,
    CREDENTIALS_DIR,
    DKIM_DIR,
    HTTP_PORT,
    SMARTHOST_DIR,
    SPOOL_DIR,
    TLS_DIR,
    container_port,
)

WATCHER_READY_FILE = f"{CREDENTIALS_DIR}/..data"
SHUTDOWN_GRACE_SECONDS = 20  # the relay's Limits.shutdown_grace_seconds default; the pod gets 10 s more


@dataclass(frozen=True)
class Image:
    name: str
    pull_policy: str = "IfNotPresent"


def service_account(cluster: Cluster) -> Obj:
    obj = child("v1", "ServiceAccount", naming.mta(cluster.metadata.name), cluster,
                naming.labels(cluster.metadata.name, "relay"))
    obj["automountServiceAccountToken"] = True  # the config watcher reads its Secrets with it
    return obj


def role(cluster: Cluster) -> Obj:
    """Only the credential table's Secrets of this cluster, by name; watch works with a name fieldSelector."""
    name = cluster.metadata.name
    secrets = [naming.manifest(name), *(naming.shard(name, i) for i in range(naming.MAX_SHARDS))]
    obj = child("rbac.authorization.k8s.io/v1", "Role", naming.mta(name), cluster,
                naming.labels(name, "relay"))
    obj["rules"] = [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": secrets,
                     "verbs": ["get", "list", "watch"]}]
    return obj


def role_binding(cluster: Cluster) -> Obj:
    name = cluster.metadata.name
    obj = child("rbac.authorization.k8s.io/v1", "RoleBinding", naming.mta(name), cluster,
                naming.labels(name, "relay"))
    obj["roleRef"] = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": naming.mta(name)}
    obj["subjects"] = [{"kind": "ServiceAccount", "name": naming.mta(name),
                        "namespace": cluster.metadata.namespace}]
    return obj


def _security() -> Obj:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def _probe(cluster: Cluster, path: str, period: int) -> Obj:
    if cluster.spec.http.enabled:
        action: Obj = {"httpGet": {"path": path, "port": "http", "scheme": "HTTPS"}}
    else:
        action = {"tcpSocket": {"port": container_port(cluster.spec.smtp.ports[0])}}
    return {**action, "periodSeconds": period, "timeoutSeconds": 3, "failureThreshold": 3}


def _volumes(cluster: Cluster, tls_secret: str) -> tuple[list[Obj], list[Obj]]:
    name = cluster.metadata.name
    spool = cluster.spec.queue.storage
    volumes: list[Obj] = [
        {"name": "config", "configMap": {"name": naming.settings(name)}},
        {"name": "tls", "secret": {"secretName": tls_secret}},
        {"name": "dkim", "secret": {"secretName": naming.dkim_bundle(name), "optional": True}},
        # Verifiers never touch a disk: the watcher writes them to memory.
        {"name": "credentials", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
        {"name": "spool", "emptyDir": {"sizeLimit": spool.size}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
    ]
    mounts: list[Obj] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "tls", "mountPath": TLS_DIR, "readOnly": True},
        {"name": "dkim", "mountPath": DKIM_DIR, "readOnly": True},
        {"name": "credentials", "mountPath": CREDENTIALS_DIR, "readOnly": True},
        {"name": "spool", "mountPath": SPOOL_DIR},
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - the pod's own writable tmp volume
    ]
    smarthost = cluster.spec.delivery.smarthost
    if smarthost and smarthost.credentials_secret_ref:
        volumes.append({"name": "smarthost", "secret": {"secretName": smarthost.credentials_secret_ref.name}})
        mounts.append({"name": "smarthost", "mountPath": SMARTHOST_DIR, "readOnly": True})
    return volumes, mounts


def _watcher(cluster: Cluster, image: Image) -> Obj:
    """Native sidecar: starts first (its startup probe waits for the first table), runs for the pod's life."""
    name = cluster.metadata.name
    return {
        "name": "config-watcher", "image": image.name, "imagePullPolicy": image.pull_policy,
        "restartPolicy": "Always",
        "command": ["python", "-m", "mta_relay.k8s_source", "--namespace", cluster.metadata.namespace,
                    "--manifest", naming.manifest(name), "--dir", CREDENTIALS_DIR],
        "securityContext": _security(),
        "resources": {"requests": {"cpu": "10m", "memory": "48Mi"}, "limits": {"memory": "128Mi"}},
        "startupProbe": {"exec": {"command": ["test", "-e", WATCHER_READY_FILE]},
                         "periodSeconds": 1, "failureThreshold": 120},
        "volumeMounts": [{"name": "credentials", "mountPath": CREDENTIALS_DIR},
                         {"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108
    }


def deployment(cluster: Cluster, tls_secret: str, settings_hash: str, image: Image) -> Obj:
    name = cluster.metadata.name
    spec = cluster.spec
    selector = naming.pod_selector(name)
    pod_labels = naming.labels(name, "relay")
    volumes, mounts = _volumes(cluster, tls_secret)
    ports = [{"name": f"smtp-{p}", "containerPort": container_port(p), "protocol": "TCP"}
             for p in spec.smtp.ports]
    ports.append({"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"})
    relay = {
        "name": "relay", "image": image.name, "imagePullPolicy": image.pull_policy,
        # The command is explicit (not left to the image's ENTRYPOINT) so the pod spec says what runs.
        # Listening on the pod IP only: pods that share a host's network (the test bed) do not collide.
        "command": ["mta-relay"],
        "args": ["--config", CONFIG_DIR, "--listen-address", "$(POD_IP)"],
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "ports": ports,
        "readinessProbe": _probe(cluster, "/readyz", 5),
        "livenessProbe": _probe(cluster, "/healthz", 10),
        "securityContext": _security(),
        "volumeMounts": mounts,
    }
    resources = spec.pod.resources.model_dump(exclude_defaults=True)
    if resources:
        relay["resources"] = resources
    pod: Obj = {
        "serviceAccountName": naming.mta(name),
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "terminationGracePeriodSeconds": SHUTDOWN_GRACE_SECONDS + 10,
        "initContainers": [_watcher(cluster, image)],
        "containers": [relay],
        "volumes": volumes,
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                       "whenUnsatisfiable": "ScheduleAnyway",
                                       "labelSelector": {"matchLabels": selector}}],
    }
    if spec.pod.node_selector:
        pod["nodeSelector"] = dict(spec.pod.node_selector)
    if spec.pod.tolerations:
        pod["tolerations"] = [t.model_dump(exclude_none=True) for t in spec.pod.tolerations]
    obj = child("apps/v1", "Deployment", naming.mta(name), cluster, pod_labels)
    obj["spec"] = {
        "replicas": spec.mtas,
        "selector": {"matchLabels": selector},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {"metadata": {"labels": pod_labels,
                                  "annotations": {naming.SETTINGS_HASH: settings_hash}},
                     "spec": pod},
    }
    return obj
