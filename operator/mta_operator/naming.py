"""Names and labels of everything the operator creates: one place, so handlers, renderers and the relay's
watcher agree. Children are named after their owner, so a restart finds (never duplicates) them."""

from __future__ import annotations

FIELD_MANAGER = "mta-operator"
PREFIX = "mta-operator.io"
MAX_SHARDS = 64  # the relay's Role names every shard Secret it may read; 64 x 512 KiB is ~100k credentials

MANAGED_BY = {"app.kubernetes.io/managed-by": "mta-operator"}
COMPONENT = "app.kubernetes.io/component"
CLUSTER_LABEL = f"{PREFIX}/cluster"
SETTINGS_HASH = f"{PREFIX}/settings-hash"


def pod_selector(cluster: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "mta-relay", "app.kubernetes.io/instance": cluster}


def labels(cluster: str, component: str) -> dict[str, str]:
    return {**pod_selector(cluster), **MANAGED_BY, COMPONENT: component, CLUSTER_LABEL: cluster}


def mta(cluster: str) -> str:
    """Deployment, client Service, ServiceAccount, Role, RoleBinding and PDB."""
    return f"{cluster}-mta"


def headless(cluster: str) -> str:
    return f"{cluster}-mta-pods"


def settings(cluster: str) -> str:
    return f"{cluster}-mta-settings"


def tls(cluster: str) -> str:
    return f"{cluster}-mta-tls"


def ca(cluster: str) -> str:
    return f"{cluster}-mta-ca"


def dkim_bundle(cluster: str) -> str:
    return f"{cluster}-mta-dkim"


def manifest(cluster: str) -> str:
    """The credential table's manifest Secret: which shard Secrets are in force, with their digests."""
    return f"{cluster}-mta-credentials"


def shard(cluster: str, index: int) -> str:
    return f"{cluster}-mta-credentials-{index:03d}"


def connection(credential: str) -> str:
    return f"{credential}-smtp"


def dkim_key(sending_domain: str) -> str:
    return f"{sending_domain}-dkim-key"
