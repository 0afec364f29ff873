"""Secrets: the DKIM key bundle, the MTAs' peer token, the sharded credential table with its manifest, the
per-credential connection Secret apps mount, a domain's DKIM key. The settings ConfigMap is rendered in
``relay_config``, the cert-manager Certificate in ``certificate``."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

from mta_relay import shards as table_format

from mta_operator import naming
from mta_operator.api import Cluster, SendingDomain, SmtpCredential

from .meta import Obj, secret
from .relay_config import ADMIN_TOKEN_KEY, PEER_TOKEN_KEY

SUBMISSION_PORT = 587


def peer_secret(cluster: Cluster, token: str) -> Obj:
    """The token the MTAs of a cluster authenticate each other with when they hand over queued mail; the
    operator uses it to ask a leaving MTA how much it still holds. Never an SMTP credential."""
    name = cluster.metadata.name
    return secret(naming.peer(name), cluster, naming.labels(name, "peer"), {PEER_TOKEN_KEY: token})


def admin_secret(cluster: Cluster, token: str) -> Obj:
    """The token of the MTAs' admin API (``kubectl mta messages``): separate from the peer token, so
    reading messages can be granted without the right to hand over queues."""
    name = cluster.metadata.name
    return secret(naming.admin(name), cluster, naming.labels(name, "admin"), {ADMIN_TOKEN_KEY: token})


def dkim_bundle(cluster: Cluster, keys: Mapping[str, str]) -> Obj:
    """File name (see relay_config.dkim_file_name) → private key PEM, for every signing domain."""
    name = cluster.metadata.name
    return secret(naming.dkim_bundle(name), cluster, naming.labels(name, "dkim"), dict(keys))


def table(cluster: Cluster, shards: Mapping[str, str]) -> tuple[dict[str, Obj], Obj]:
    """Shard Secrets (name → object) and the manifest that names them with their digests (the format is
    ``mta_relay.shards``'s). The watcher reads the manifest and fetches shards whose digest changed, so a
    reader never mixes generations."""
    name = cluster.metadata.name
    labels = naming.labels(name, "credentials")
    refs, manifest_text = table_format.encode_manifest(name, dict(shards))
    objects = {ref.secret: secret(ref.secret, cluster, labels, {ref.key: shards[ref.key]}) for ref in refs}
    return objects, secret(table_format.manifest_secret(name), cluster, labels,
                           {table_format.MANIFEST_KEY: manifest_text})


def submission_port(cluster: Cluster) -> int:
    ports = cluster.spec.smtp.ports
    return SUBMISSION_PORT if SUBMISSION_PORT in ports else ports[0]


def connection_secret(cred: SmtpCredential, cluster: Cluster, password: str | None,
                      annotations: Mapping[str, str] | None = None) -> Obj:
    """What an app mounts. ``password`` None (SourceIP, or a user's own Secret): no password is copied.
    ``annotations``: the operator's record of the password (``naming.PASSWORD_CREATED`` and the rotation
    requests it answers), times only."""
    host = cluster.spec.hostname
    port = submission_port(cluster)
    user = cred.effective_username
    userinfo = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
    data = {"username": user, "host": host, "port": str(port),
            "serviceHost": f"{naming.mta(cluster.metadata.name)}.{cluster.metadata.namespace}.svc",
            "url": f"smtp://{userinfo}@{host}:{port}"}
    if password:
        data["password"] = password
    obj = secret(naming.connection(cred.metadata.name), cred,
                 {**naming.MANAGED_BY, naming.COMPONENT: "connection",
                  naming.CLUSTER_LABEL: cred.spec.cluster_ref.name}, data)
    if annotations:
        obj["metadata"]["annotations"] = dict(annotations)
    return obj


def dkim_key_secret(domain: SendingDomain, private_pem: str) -> Obj:
    algorithm = str(domain.spec.dkim.algorithm)
    obj = secret(naming.dkim_key(domain.metadata.name), domain,
                 {**naming.MANAGED_BY, naming.COMPONENT: "dkim-key",
                  naming.CLUSTER_LABEL: domain.spec.cluster_ref.name},
                 {"private.pem": private_pem})
    obj["metadata"]["annotations"] = {f"{naming.PREFIX}/dkim-algorithm": algorithm,
                                      f"{naming.PREFIX}/domain": domain.spec.domain}
    return obj

