"""Secrets: the DKIM key bundle, the MTAs' peer token, the sharded credential table with its manifest, the
per-credential connection Secret apps mount, a domain's DKIM key. The settings ConfigMap is rendered in
``relay_config``, the cert-manager Certificate in ``certificate``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from urllib.parse import quote

from mta_operator import naming
from mta_operator.api import Cluster, SendingDomain, SmtpCredential

from .meta import Obj, secret
from .relay_config import PEER_TOKEN_KEY

MANIFEST_KEY = "manifest.json"
SUBMISSION_PORT = 587


def peer_secret(cluster: Cluster, token: str) -> Obj:
    """The token the MTAs of a cluster authenticate each other with when they hand over queued mail; the
    operator uses it to ask a leaving MTA how much it still holds. Never an SMTP credential."""
    name = cluster.metadata.name
    return secret(naming.peer(name), cluster, naming.labels(name, "peer"), {PEER_TOKEN_KEY: token})


def dkim_bundle(cluster: Cluster, keys: Mapping[str, str]) -> Obj:
    """File name (see relay_config.dkim_file_name) → private key PEM, for every signing domain."""
    name = cluster.metadata.name
    return secret(naming.dkim_bundle(name), cluster, naming.labels(name, "dkim"), dict(keys))


def shard_index(file_name: str) -> int:
    """credentials-007.json → 7."""
    return int(file_name.removeprefix("credentials-").removesuffix(".json"))


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def table(cluster: Cluster, shards: Mapping[str, str]) -> tuple[dict[str, Obj], Obj]:
    """Shard Secrets (name → object) and the manifest that names them with their digests. The watcher
    reads the manifest and fetches shards whose digest changed, so a reader never mixes generations."""
    name = cluster.metadata.name
    labels = naming.labels(name, "credentials")
    objects = {}
    entries = []
    for file_name, text in sorted(shards.items()):
        secret_name = naming.shard(name, shard_index(file_name))
        objects[secret_name] = secret(secret_name, cluster, labels, {file_name: text})
        entries.append({"secret": secret_name, "key": file_name, "sha256": digest(text)})
    manifest_text = json.dumps({"version": 1, "shards": entries}, separators=(",", ":"))
    return objects, secret(naming.manifest(name), cluster, labels, {MANIFEST_KEY: manifest_text})


def submission_port(cluster: Cluster) -> int:
    ports = cluster.spec.smtp.ports
    return SUBMISSION_PORT if SUBMISSION_PORT in ports else ports[0]


def connection_secret(cred: SmtpCredential, cluster: Cluster, password: str | None) -> Obj:
    """What an app mounts. ``password`` None (SourceIP, or a user's own Secret): no password is copied."""
    host = cluster.spec.hostname
    port = submission_port(cluster)
    user = cred.effective_username
    userinfo = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
    data = {"username": user, "host": host, "port": str(port),
            "serviceHost": f"{naming.mta(cluster.metadata.name)}.{cluster.metadata.namespace}.svc",
            "url": f"smtp://{userinfo}@{host}:{port}"}
    if password:
        data["password"] = password
    return secret(naming.connection(cred.metadata.name), cred,
                  {**naming.MANAGED_BY, naming.COMPONENT: "connection",
                   naming.CLUSTER_LABEL: cred.spec.cluster_ref.name}, data)


def dkim_key_secret(domain: SendingDomain, private_pem: str) -> Obj:
    algorithm = str(domain.spec.dkim.algorithm)
    obj = secret(naming.dkim_key(domain.metadata.name), domain,
                 {**naming.MANAGED_BY, naming.COMPONENT: "dkim-key",
                  naming.CLUSTER_LABEL: domain.spec.cluster_ref.name},
                 {"private.pem": private_pem})
    obj["metadata"]["annotations"] = {f"{naming.PREFIX}/dkim-algorithm": algorithm,
                                      f"{naming.PREFIX}/domain": domain.spec.domain}
    return obj

