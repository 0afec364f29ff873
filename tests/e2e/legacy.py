"""A Cluster as the previous release laid it out, for the upgrade test: its MTAs a Deployment whose pods
mount the settings ConfigMap and the TLS Secret through kubelet and keep their queue on an emptyDir;
the credential table and the certificate made with the operator's own renderers (the format owners).

The pods run the relay of this checkout (the test bed has no older image); what matters is the layout the
new operator finds: a Deployment with mail in its pods' emptyDir spools."""

from __future__ import annotations

import datetime as dt
from typing import Any

import yaml
from mta_operator import naming
from mta_operator.api import Cluster, SmtpCredential
from mta_operator.keys import managed_tls
from mta_operator.render import relay_config, secrets
from mta_operator.render.meta import child, secret
from mta_relay.passwords import fast_verifier
from mta_relay.shards import manifest_secret, render_shards

OLD_CONFIG = "/etc/mta-relay/config"
OLD_TLS = "/etc/mta-relay/tls"
OLD_CREDENTIALS = "/var/run/mta-relay/credentials"

Obj = dict[str, Any]


def objects(cluster: Cluster, cred: SmtpCredential, password: str) -> tuple[list[Obj], str]:
    """Everything the previous release's operator had made for ``cluster`` (one credential), and the
    CA certificate PEM clients trust."""
    name = cluster.metadata.name
    now = dt.datetime.now(dt.UTC)
    ca = managed_tls.new_ca(f"mta-operator {cluster.metadata.namespace}/{name} CA", now)
    serving = managed_tls.issue(ca, cluster.spec.hostname, now)
    labels = naming.labels(name, "tls")
    tls = secret(naming.tls(name), cluster, labels, {"tls.crt": serving.cert_pem, "tls.key": serving.key_pem,
                                                     "ca.crt": ca.cert_pem}, type_="kubernetes.io/tls")
    ca_secret = secret(naming.ca(name), cluster, labels, {"tls.crt": ca.cert_pem, "tls.key": ca.key_pem})
    settings = relay_config.relay_settings(cluster, [])
    old = settings.model_copy(update={
        "tls": settings.tls.model_copy(update={"cert_file": f"{OLD_TLS}/tls.crt",
                                               "key_file": f"{OLD_TLS}/tls.key"}),
        "credentials_dir": OLD_CREDENTIALS})
    config = relay_config.settings_config_map(cluster, relay_config.settings_yaml(old))
    entry = relay_config.credential(cred, fast_verifier(password), relay_config.mechanisms(cluster))
    shards, manifest = secrets.table(cluster, render_shards([entry]))
    relay_labels = naming.labels(name, "relay")
    account = child("v1", "ServiceAccount", naming.mta(name), cluster, relay_labels)
    role = child("rbac.authorization.k8s.io/v1", "Role", naming.mta(name), cluster, relay_labels)
    role["rules"] = [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"],
                      "resourceNames": [manifest_secret(name), *shards]}]
    binding = child("rbac.authorization.k8s.io/v1", "RoleBinding", naming.mta(name), cluster,
                    naming.labels(name, "relay"))
    binding["roleRef"] = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": naming.mta(name)}
    binding["subjects"] = [{"kind": "ServiceAccount", "name": naming.mta(name),
                            "namespace": cluster.metadata.namespace}]
    return [tls, ca_secret, config, *shards.values(), manifest, account, role, binding,
            deployment(cluster)], ca.cert_pem


def deployment(cluster: Cluster) -> Obj:
    name = cluster.metadata.name
    pod_labels = naming.labels(name, "relay")
    security = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
    watcher = {"name": "config-watcher", "image": "mta-relay:previous", "restartPolicy": "Always",
               "command": ["python", "-m", "mta_relay.config_watcher", "--namespace",
                           cluster.metadata.namespace, "--manifest", manifest_secret(name), "--dir",
                           OLD_CREDENTIALS],
               "securityContext": security,
               "startupProbe": {"exec": {"command": ["test", "-e", f"{OLD_CREDENTIALS}/..data"]},
                                "periodSeconds": 1, "failureThreshold": 120},
               "volumeMounts": [{"name": "credentials", "mountPath": OLD_CREDENTIALS},
                                {"name": "tmp", "mountPath": "/tmp"}]}
    relay = {"name": "relay", "image": "mta-relay:previous", "command": ["mta-relay"],
             "args": ["--config", OLD_CONFIG, "--listen-address", "$(POD_IP)"],
             "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
             "ports": [{"name": "http", "containerPort": relay_config.HTTP_PORT}],
             "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http", "scheme": "HTTPS"},
                                "periodSeconds": 2},
             "securityContext": security,
             "volumeMounts": [{"name": "config", "mountPath": OLD_CONFIG, "readOnly": True},
                              {"name": "tls", "mountPath": OLD_TLS, "readOnly": True},
                              {"name": "credentials", "mountPath": OLD_CREDENTIALS, "readOnly": True},
                              {"name": "spool", "mountPath": relay_config.SPOOL_DIR},
                              {"name": "tmp", "mountPath": "/tmp"}]}
    pod = {"serviceAccountName": naming.mta(name),
           "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001},
           "terminationGracePeriodSeconds": 30, "initContainers": [watcher], "containers": [relay],
           "volumes": [{"name": "config", "configMap": {"name": naming.settings(name)}},
                       {"name": "tls", "secret": {"secretName": naming.tls(name)}},
                       {"name": "credentials", "emptyDir": {"medium": "Memory"}},
                       {"name": "spool", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]}
    obj = child("apps/v1", "Deployment", naming.mta(name), cluster, pod_labels)
    obj["spec"] = {"replicas": cluster.spec.mtas, "selector": {"matchLabels": naming.pod_selector(name)},
                   "template": {"metadata": {"labels": pod_labels}, "spec": pod}}
    return obj


def dump(objs: list[Obj]) -> str:
    return yaml.safe_dump_all(objs)
