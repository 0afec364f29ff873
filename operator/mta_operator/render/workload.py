"""The MTA pods: ServiceAccount, the least-privilege Role of the relay's config watcher, and the StatefulSet
(one spool volume per MTA that outlives its pod, Pod Security "restricted", probes, topology spread, a
drain-sized grace period).

Only what needs a new process is in the pod template: image, resources, ports, pod settings and which
objects the watcher follows. Everything else (domains, DKIM keys, credentials, limits, rate limit, number
of MTAs, delivery, a renewed certificate) reaches running MTAs through the watcher, so changing it rolls
no pod.
"""

from __future__ import annotations

from dataclasses import dataclass

from mta_relay import shards

from mta_operator import naming
from mta_operator.api import Cluster

from . import delivery
from .meta import Obj, child
from .relay_config import (
    ADMIN_DIR,
    CONFIG_DIR,
    CREDENTIALS_DIR,
    DKIM_DIR,
    HTTP_PORT,
    PEER_DIR,
    SMARTHOST_DIR,
    SPOOL_DIR,
    TLS_DIR,
    WEBHOOK_DIR_PREFIX,
    container_port,
    smtp_ports,
    webhook_dir,
)

WATCHER_READY_FILES = (f"{CREDENTIALS_DIR}/..data", f"{CONFIG_DIR}/..data")
SHUTDOWN_GRACE_SECONDS = 20  # the relay's Limits.shutdown_grace_seconds default; the pod gets 10 s more
SPOOL_VOLUME = "spool"


@dataclass(frozen=True)
class Image:
    name: str
    pull_policy: str = "IfNotPresent"


def service_account(cluster: Cluster) -> Obj:
    obj = child("v1", "ServiceAccount", naming.mta(cluster.metadata.name), cluster,
                naming.labels(cluster.metadata.name, "relay"))
    obj["automountServiceAccountToken"] = True  # the config watcher reads its Secrets with it
    return obj


def watched_secrets(cluster: Cluster, tls_secret: str) -> list[tuple[str, str]]:
    """(Secret name, subdirectory) of every Secret the watcher publishes into the config directory.
    Subdirectories of webhooks' Secrets start with ``WEBHOOK_DIR_PREFIX``: those the bundle may go
    without (a webhook whose Secret is missing is idle; mail goes on)."""
    name = cluster.metadata.name
    found = [(tls_secret, TLS_DIR), (naming.dkim_bundle(name), DKIM_DIR), (naming.peer(name), PEER_DIR)]
    # The default smarthost's Secret (subdirectory smarthost, required as always), then the routes'
    # (smarthost-<name>, optional: a missing one is refused by the operator, not waited for).
    found += sorted(delivery.secret_dirs(cluster).items(), key=lambda item: item[1] != SMARTHOST_DIR)
    found.append((naming.admin(name), ADMIN_DIR))
    found += [(hook.secret_ref.name, webhook_dir(hook.name)) for hook in cluster.spec.events.webhooks]
    return found


def _optional(subdir: str) -> bool:
    return subdir.startswith((WEBHOOK_DIR_PREFIX, delivery.SMARTHOST_SECRET_PREFIX))


def role(cluster: Cluster, tls_secret: str) -> Obj:
    """Only the Secrets and the ConfigMap the watcher follows, by name (watch works with a name
    fieldSelector)."""
    name = cluster.metadata.name
    secrets = [shards.manifest_secret(name),
               *(shards.shard_secret(name, i) for i in range(naming.MAX_SHARDS)),
               *sorted({secret for secret, _ in watched_secrets(cluster, tls_secret)})]
    obj = child("rbac.authorization.k8s.io/v1", "Role", naming.mta(name), cluster,
                naming.labels(name, "relay"))
    obj["rules"] = [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": secrets,
                     "verbs": ["get", "list", "watch"]},
                    {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [naming.settings(name)],
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


def _probe(path: str, period: int) -> Obj:
    # The HTTPS port serves probes whether or not HTTP submission is on (see relay_config).
    return {"httpGet": {"path": path, "port": "http", "scheme": "HTTPS"}, "periodSeconds": period,
            "timeoutSeconds": 3, "failureThreshold": 3}


def _volumes(cluster: Cluster) -> tuple[list[Obj], list[Obj]]:
    volumes: list[Obj] = [
        # What the watcher publishes (keys, verifiers, settings) never touches a disk.
        {"name": "config", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
        {"name": "credentials", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
    ]
    storage = cluster.spec.queue.storage
    if storage.ephemeral:
        volumes.append({"name": SPOOL_VOLUME, "emptyDir": {"sizeLimit": storage.size}})
    mounts: list[Obj] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "credentials", "mountPath": CREDENTIALS_DIR, "readOnly": True},
        {"name": SPOOL_VOLUME, "mountPath": SPOOL_DIR},
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - the pod's own writable tmp volume
    ]
    return volumes, mounts


def _watcher(cluster: Cluster, tls_secret: str, image: Image) -> Obj:
    """Native sidecar: starts first (its startup probe waits for the first config and table), runs for
    the pod's life."""
    name = cluster.metadata.name
    sources = [f"configmap/{naming.settings(name)}",
               *(f"secret/{secret}={subdir}{'?' if _optional(subdir) else ''}"
                 for secret, subdir in watched_secrets(cluster, tls_secret))]
    ready = ["test", "-e", WATCHER_READY_FILES[0]]
    for path in WATCHER_READY_FILES[1:]:
        ready += ["-a", "-e", path]
    return {
        "name": "config-watcher", "image": image.name, "imagePullPolicy": image.pull_policy,
        "restartPolicy": "Always",
        "command": ["python", "-m", "mta_relay.config_watcher", "--namespace", cluster.metadata.namespace,
                    "--manifest", shards.manifest_secret(name), "--dir", CREDENTIALS_DIR,
                    "--config-dir", CONFIG_DIR, *(arg for s in sources for arg in ("--source", s))],
        "securityContext": _security(),
        "resources": {"requests": {"cpu": "10m", "memory": "48Mi"}, "limits": {"memory": "128Mi"}},
        "startupProbe": {"exec": {"command": ready}, "periodSeconds": 1, "failureThreshold": 120},
        "volumeMounts": [{"name": "credentials", "mountPath": CREDENTIALS_DIR},
                         {"name": "config", "mountPath": CONFIG_DIR},
                         {"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108
    }


def volume_claim(cluster: Cluster) -> Obj:
    """The spool claim template: the StatefulSet makes spool-CLUSTER-mta-N from it, one per MTA."""
    storage = cluster.spec.queue.storage
    spec: Obj = {"accessModes": [str(m) for m in storage.access_modes],
                 "resources": {"requests": {"storage": storage.size}}}
    if storage.storage_class_name:
        spec["storageClassName"] = storage.storage_class_name
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": SPOOL_VOLUME, "labels": naming.labels(cluster.metadata.name, "spool")},
            "spec": spec}


def statefulset(cluster: Cluster, tls_secret: str, image: Image, replicas: int) -> Obj:
    """``replicas`` is what the StatefulSet runs now: spec.mtas, or more while leaving MTAs hand off."""
    name = cluster.metadata.name
    spec = cluster.spec
    selector = naming.workload_selector(name)
    pod_labels = {**naming.labels(name, "relay"), **selector}
    volumes, mounts = _volumes(cluster)
    ports = [{"name": name, "containerPort": container_port(p), "protocol": "TCP"}
             for name, p in smtp_ports(cluster)]
    ports.append({"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"})
    relay = {
        "name": "relay", "image": image.name, "imagePullPolicy": image.pull_policy,
        # The command is explicit (not left to the image's ENTRYPOINT) so the pod spec says what runs.
        # Listening on the pod IP only: pods that share a host's network (the test bed) do not collide.
        "command": ["mta-relay"],
        "args": ["--config", CONFIG_DIR, "--listen-address", "$(POD_IP)",
                 *(["--workers", str(spec.smtp.workers)] if spec.smtp.workers else [])],
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                # The relay finds itself in the settings' hand-off list by its pod name.
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "ports": ports,
        "readinessProbe": _probe("/readyz", 5),
        "livenessProbe": _probe("/healthz", 10),
        "securityContext": _security(),
        "volumeMounts": mounts,
    }
    resources = spec.pod.resources.model_dump(exclude_defaults=True)
    if resources:
        relay["resources"] = resources
    pod: Obj = {
        "serviceAccountName": naming.mta(name),
        # OnRootMismatch: a large spool is not walked and chowned at every start.
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                            "fsGroupChangePolicy": "OnRootMismatch",
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "terminationGracePeriodSeconds": SHUTDOWN_GRACE_SECONDS + 10,
        "initContainers": [_watcher(cluster, tls_secret, image)],
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
    obj = child("apps/v1", "StatefulSet", naming.mta(name), cluster, naming.labels(name, "relay"))
    obj["spec"] = {
        "replicas": replicas,
        "serviceName": naming.headless(name),
        "selector": {"matchLabels": selector},
        # MTAs start and stop side by side (scale-up needs no order); rollouts still go one pod at a time.
        "podManagementPolicy": "Parallel",
        "updateStrategy": {"type": "RollingUpdate"},
        # Retain: a volume may hold mail that is not delivered yet; the operator deletes the volume of a
        # removed MTA only after that MTA reported its queue empty (see reconcile/cluster.py).
        "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
        "template": {"metadata": {"labels": pod_labels}, "spec": pod},
    }
    if not spec.queue.storage.ephemeral:
        obj["spec"]["volumeClaimTemplates"] = [volume_claim(cluster)]
    return obj
