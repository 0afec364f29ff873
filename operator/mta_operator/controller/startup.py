"""Before the first reconcile: list the custom resources and the operator's own Secrets, so a restart
reuses every password verifier and serves the same table instead of rebuilding it from nothing; and the
periodic resync that catches what watches cannot (deletes missed while the operator was down)."""

from __future__ import annotations

import base64
import logging
from typing import TYPE_CHECKING, Any

from mta_relay import shards

from mta_operator import naming
from mta_operator.api import API_VERSION, SendingDomain, SmtpCredential
from mta_operator.keys.dkim import algorithm_of
from mta_operator.kube.apply import owner_uids
from mta_operator.reconcile.index import DkimState, Key
from mta_operator.reconcile.table import consistent, shard_in_secret

if TYPE_CHECKING:
    from .controller import Controller

log = logging.getLogger("mta_operator.startup")
OWN_SECRETS = (f"app.kubernetes.io/managed-by=mta-operator,"
               f"{naming.COMPONENT} in (credentials,connection,dkim-key)")


def _decode(data: dict[str, str] | None) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (data or {}).items()}


async def _list(ctl: Controller, api_version: str, kind: str,
                selector: str | None = None) -> list[dict[str, Any]]:
    """Objects of ``kind`` in every watched namespace (one cluster-wide list when all are watched)."""
    found: list[dict[str, Any]] = []
    for ns in ctl.options.namespaces or (None,):
        found += await ctl.io(ctl.kube.list, api_version, kind, ns, selector)
    return found


async def sync(ctl: Controller) -> None:
    clusters = await _list(ctl, API_VERSION, "Cluster")
    domains = await _list(ctl, API_VERSION, "SendingDomain")
    creds = await _list(ctl, API_VERSION, "SmtpCredential")
    own = await _list(ctl, "v1", "Secret", OWN_SECRETS)
    for raw in clusters:
        ctl.on_object("Cluster", "ADDED", raw)
    for raw in domains:
        ctl.index.domains[(raw["metadata"]["namespace"], raw["metadata"]["name"])] = \
            SendingDomain.model_validate(raw)
    for raw in creds:
        ctl.index.put_cred(SmtpCredential.model_validate(raw), raw["metadata"].get("creationTimestamp", ""))
    shard_texts: dict[Key, dict[str, str]] = {}
    manifests: dict[Key, str] = {}
    for secret in own:
        _remember(ctl, secret, shard_texts, manifests)
    for ck, texts in shard_texts.items():
        if ck not in ctl.index.clusters:
            continue
        table = ctl.table(ck)
        table.written = dict(texts)
        table.manifest_written = manifests.get(ck)
        _carry_over(ctl, ck, texts)
    log.info("synced", extra={"clusters": len(clusters), "domains": len(domains), "credentials": len(creds)})


def _remember(ctl: Controller, secret: dict[str, Any], shard_texts: dict[Key, dict[str, str]],
              manifests: dict[Key, str]) -> None:
    meta = secret["metadata"]
    labels = meta.get("labels", {})
    component = labels.get(naming.COMPONENT)
    ns = meta["namespace"]
    if component == "connection":
        ours = {k: v for k, v in (meta.get("annotations") or {}).items()
                if k.startswith(naming.PREFIX + "/")}
        ctl.index.connections[(ns, meta["name"])] = (owner_uids(secret), _decode(secret.get("data")), ours)
    elif component == "dkim-key":
        pem = _decode(secret.get("data")).get("private.pem", "")
        algorithm = algorithm_of(pem)
        owner = next((r for r in meta.get("ownerReferences", []) if r.get("kind") == "SendingDomain"), None)
        if owner and algorithm:
            ctl.index.dkim[(ns, owner["name"])] = DkimState(pem, algorithm)
    elif component == "credentials":
        ck = (ns, labels.get(naming.CLUSTER_LABEL, ""))
        if meta["name"] == shards.manifest_secret(ck[1]):
            manifests[ck] = _decode(secret.get("data")).get(shards.MANIFEST_KEY, "")
            return
        shard = shard_in_secret(secret)
        if shard:
            shard_texts.setdefault(ck, {})[shard[0]] = shard[1]


def _carry_over(ctl: Controller, ck: Key, texts: dict[str, str]) -> None:
    """Keep serving what the table served: each entry goes to the credential that now owns its username;
    usernames nobody claims any more drop out at the first write."""
    table = ctl.tables[ck]
    users: dict[str, list[str]] = {}
    for name, text in texts.items():
        try:
            shard = shards.decode_shard(text)
        except ValueError:  # bad JSON or a bad entry (pydantic's ValidationError is one)
            table.written[name] = ""  # unreadable: rewritten at the first write
            continue
        users[name] = [entry.username for entry in shard.credentials]
        for entry in shard.credentials:
            if entry.password_verifier:
                ctl.known_verifiers[(ck, entry.username)] = entry.password_verifier
            owner = ctl.index.winner(ck, entry.username)
            if owner is not None:
                table.entries[owner] = entry
            else:  # deleted while the operator was away: its shard is rewritten at the first write
                table.changed.add(entry.username)
                table.dirty.set()
    if not consistent(users):
        table.written = {name: "" for name in table.written}  # not a clean assignment: full render
        table.dirty.set()


async def resync(ctl: Controller) -> None:
    """Re-list the custom resources: forget what vanished unseen, re-check everything else."""
    for kind, store in (("Cluster", ctl.index.clusters), ("SendingDomain", ctl.index.domains),
                        ("SmtpCredential", ctl.index.creds)):
        items = await _list(ctl, API_VERSION, kind)
        live = {(i["metadata"]["namespace"], i["metadata"]["name"]) for i in items}
        for key in [k for k in store if k not in live]:
            ctl.on_object(kind, "DELETED", {"metadata": {"namespace": key[0], "name": key[1]}})
    ctl.applier.forget_all()
    for ck in ctl.index.clusters:
        ctl.enqueue(("cluster", ck))
    for key in ctl.index.domains:
        ctl.enqueue(("domain", key))
    for key, cred in ctl.index.creds.items():
        if cred.spec.password_secret_ref is not None:  # the user may have rotated their password
            ctl.enqueue(("cred", key))

