"""Names and labels of everything the operator creates: one place, so handlers, renderers and the relay's
watcher agree. Children are named after their owner, so a restart finds (never duplicates) them. The
credential table's Secrets are the exception: their names are part of its wire format, owned by
``mta_relay.shards``."""

from __future__ import annotations

FIELD_MANAGER = "mta-operator"
PREFIX = "mta-operator.io"
MAX_SHARDS = 64  # the relay's Role names every shard Secret it may read; 64 x 512 KiB is ~100k credentials

MANAGED_BY = {"app.kubernetes.io/managed-by": "mta-operator"}
COMPONENT = "app.kubernetes.io/component"
CLUSTER_LABEL = f"{PREFIX}/cluster"
LAYOUT_LABEL = f"{PREFIX}/layout"


def pod_selector(cluster: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "mta-relay", "app.kubernetes.io/instance": cluster}


def workload_selector(cluster: str) -> dict[str, str]:
    """The MTA pods of the StatefulSet only: not those of a Deployment left from an older release, which
    keep delivering their queue but take no new clients."""
    return {**pod_selector(cluster), LAYOUT_LABEL: "statefulset"}


def labels(cluster: str, component: str) -> dict[str, str]:
    return {**pod_selector(cluster), **MANAGED_BY, COMPONENT: component, CLUSTER_LABEL: cluster}


def mta(cluster: str) -> str:
    """StatefulSet, client Service, ServiceAccount, Role, RoleBinding and PDB."""
    return f"{cluster}-mta"


def headless(cluster: str) -> str:
    return f"{cluster}-mta-pods"


def settings(cluster: str) -> str:
    return f"{cluster}-mta-settings"


def peer(cluster: str) -> str:
    """The token MTAs of one cluster authenticate each other with (queue hand-off)."""
    return f"{cluster}-mta-peer"


def admin(cluster: str) -> str:
    """The token the MTAs' admin API (messages, queue) asks for; reached through the Kubernetes API's pod
    proxy by people whose RBAC lets them read this Secret and proxy to the MTA pods."""
    return f"{cluster}-mta-admin"


def pod(cluster: str, ordinal: int) -> str:
    return f"{mta(cluster)}-{ordinal}"


def spool_claim(cluster: str, ordinal: int) -> str:
    """The StatefulSet's claim for one MTA: <template name>-<pod name>."""
    return f"spool-{pod(cluster, ordinal)}"


def tls(cluster: str) -> str:
    return f"{cluster}-mta-tls"


def ca(cluster: str) -> str:
    return f"{cluster}-mta-ca"


def dkim_bundle(cluster: str) -> str:
    return f"{cluster}-mta-dkim"


# A connection Secret's annotations: the operator's record of the password in it (when it was made, and
# which rotation and retire requests it answers). Times only, never a password: they outlive the
# operator's memory, and the Secret is where the password they describe lives.
PASSWORD_CREATED = f"{PREFIX}/password-created"
ROTATION_ANSWERED = f"{PREFIX}/rotation-requested-at"
RETIRE_ANSWERED = f"{PREFIX}/retire-requested-at"


def connection(credential: str) -> str:
    return f"{credential}-smtp"


def dkim_key(sending_domain: str) -> str:
    return f"{sending_domain}-dkim-key"
