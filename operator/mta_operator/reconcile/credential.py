"""SmtpCredential → its connection Secret, its entry in the Cluster's credential table, and its status.

A new credential costs three API calls (Ready=False, the connection Secret, Ready=True); an unchanged one
after a restart costs none. Password verifiers come from the relay's ``passwords`` module."""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from typing import Any

from mta_relay import passwords

from mta_operator import naming
from mta_operator.api import API_VERSION, Authentication, Cluster, SmtpCredential, SmtpCredentialStatus
from mta_operator.api.reasons import ConditionType, Reason
from mta_operator.kube.apply import owner_uids
from mta_operator.kube.client import ApiError
from mta_operator.render import conditions, relay_config, secrets

from .context import Context
from .index import Index, Key
from .table import Table

log = logging.getLogger("mta_operator.credential")


@dataclass(frozen=True)
class Outcome:
    ok: bool
    reason: Reason
    message: str


class Refused(Exception):
    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


async def reconcile(ctx: Context, key: Key) -> None:
    cred = ctx.index.creds.get(key)
    if cred is None:
        return
    ck = ctx.index.cluster_of(cred)
    cluster = ctx.index.clusters.get(ck)
    table = ctx.table(ck) if cluster is not None else None
    try:
        if cluster is None:
            raise Refused(Reason.CLUSTER_NOT_FOUND, f"Cluster {ck[1]} not found in namespace {ck[0]}")
        winner = ctx.index.winner(ck, cred.effective_username)
        if winner != key:
            raise Refused(Reason.USERNAME_CONFLICT,
                          f"username {cred.effective_username} is already used by SmtpCredential "
                          f"{winner[1] if winner else '?'} of Cluster {ck[1]}; this credential is not served")
        if not _has_status(cred):
            adding = Outcome(False, Reason.RECONCILING, "Adding to the table")
            await _patch(ctx, cred, _status(ctx, cred, adding))
        assert table is not None  # made above, since the Cluster exists
        verifier, password = await _verifier(ctx, cred, cluster, ck, table)
    except Refused as refused:
        if table is not None:
            table.remove(key)  # a credential that stops being served leaves the table at the next write
        await _refuse(ctx, cred, refused)
        return
    assert table is not None
    entry = relay_config.credential(cred, verifier, relay_config.mechanisms(cluster, cred), password)
    if not table.put(key, entry) and table.served(key):
        await write_status(ctx, key)


async def _refuse(ctx: Context, cred: SmtpCredential, refused: Refused) -> None:
    before = next((c for c in _conditions(cred) if c["type"] == ConditionType.READY), {})
    await _patch(ctx, cred, _status(ctx, cred, Outcome(False, refused.reason, str(refused))))
    if before.get("reason") != refused.reason:
        await ctx.event(_ref(cred), "Warning", refused.reason, str(refused))


async def write_status(ctx: Context, key: Key) -> None:
    """Ready=True once the entry is in the written table (called by the table writer)."""
    cred = ctx.index.creds.get(key)
    if cred is None:
        return
    ck = ctx.index.cluster_of(cred)
    table = ctx.tables.get(ck)
    if table is None or not table.served(key):
        return
    outcome = served_outcome(cred, ctx.index.clusters.get(ck))
    if outcome.ok:
        await _patch(ctx, cred, _status(ctx, cred, outcome))
    else:
        await _refuse(ctx, cred, Refused(outcome.reason, outcome.message))


def served_outcome(cred: SmtpCredential, cluster: Cluster | None) -> Outcome:
    """Ready of a credential in the written table: True, unless it asks for CRAM-MD5 and its Cluster does
    not offer it (then it is served with the Cluster's other mechanisms, and Ready says what is missing)."""
    name = cred.spec.cluster_ref.name
    if cluster is not None and not relay_config.cram_md5_offered(cluster) \
            and relay_config.wants_cram_md5(cred):
        offered = ", ".join(relay_config.mechanisms(cluster, cred))
        return Outcome(False, Reason.CRAM_MD5_NOT_OFFERED,
                       f"spec.cramMd5 is set but Cluster {name} does not offer CRAM-MD5 "
                       f"(spec.smtp.authMechanisms); served with {offered} only")
    return Outcome(True, Reason.SERVING, f"In the credential table of Cluster {name}")


def _ref(cred: SmtpCredential) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "SmtpCredential",
            "metadata": {"name": cred.metadata.name, "namespace": cred.metadata.namespace,
                         "uid": cred.metadata.uid}}


def _conditions(cred: SmtpCredential) -> list[dict[str, Any]]:
    if cred.status is None:
        return []
    return [c.model_dump(mode="json", exclude_none=True) for c in cred.status.conditions]


def _has_status(cred: SmtpCredential) -> bool:
    return cred.status is not None and cred.status.observed_generation == cred.metadata.generation \
        and any(c.type == ConditionType.READY for c in cred.status.conditions)


def _status(ctx: Context, cred: SmtpCredential, outcome: Outcome) -> dict[str, Any]:
    conds = conditions.put(_conditions(cred), ConditionType.READY, outcome.ok, outcome.reason,
                           outcome.message, cred.metadata.generation, ctx.now())
    return {"observedGeneration": cred.metadata.generation, "conditions": conds,
            "username": cred.effective_username, "summary": relay_config.summary(cred),
            "connectionSecretName": naming.connection(cred.metadata.name)}


async def _patch(ctx: Context, cred: SmtpCredential, status: dict[str, Any]) -> bool:
    written = await ctx.patch_status(cred, status)
    if written is None:
        return False
    # Remember what we wrote: the watch event confirming it may come later than our next look.
    key = (cred.metadata.namespace or "", cred.metadata.name)
    if ctx.index.creds.generation.get(key) == cred.metadata.generation:  # not replaced by a newer spec
        ctx.index.creds[key] = cred.model_copy(
            update={"status": SmtpCredentialStatus.model_validate(written)})
    return True


async def _verifier(ctx: Context, cred: SmtpCredential, cluster: Cluster, ck: Key,
                    table: Table) -> tuple[str | None, str | None]:
    """(verifier, password): the password only for a credential that asks for CRAM-MD5 (its table entry
    needs it; it goes nowhere else)."""
    spec = cred.spec
    old = table.entries.get(Index.key(cred))
    known = (old.password_verifier if old else None) or ctx.known_verifiers.get((ck, cred.effective_username))
    if spec.authentication == Authentication.SOURCE_IP:
        await _connection(ctx, cred, cluster, generate=False)
        return None, None
    if spec.password_secret_ref is not None:
        password = await _user_password(ctx, cred)
        await _connection(ctx, cred, cluster, generate=False)
        if known and not known.startswith(passwords.FAST_SCHEME) and \
                await ctx.io(passwords._verify_argon2, known, password.encode()):
            return known, _for_cram(cred, password)
        return await ctx.io(passwords.argon2_verifier, password), _for_cram(cred, password)
    generated = await _connection(ctx, cred, cluster, generate=True)
    assert generated is not None
    if known and passwords.verify_fast(known, generated.encode()):
        return known, _for_cram(cred, generated)
    return passwords.fast_verifier(generated), _for_cram(cred, generated)


def _for_cram(cred: SmtpCredential, password: str) -> str | None:
    return password if relay_config.wants_cram_md5(cred) else None


async def _user_password(ctx: Context, cred: SmtpCredential) -> str:
    ref = cred.spec.password_secret_ref
    assert ref is not None
    secret = await ctx.io(ctx.kube.get, "v1", "Secret", cred.metadata.namespace or "", ref.name)
    value = (secret or {}).get("data", {}).get(ref.key)
    if not value:
        raise Refused(Reason.PASSWORD_SECRET_NOT_FOUND,
                      f"passwordSecretRef: Secret {ref.name} " + ("has no key " + ref.key if secret
                                                                   else "not found"))
    return base64.b64decode(value).decode()


async def _connection(ctx: Context, cred: SmtpCredential, cluster: Cluster,
                      generate: bool) -> str | None:
    """Ensure the connection Secret; returns the generated password (kept in it) when ``generate``."""
    key = (cred.metadata.namespace or "", naming.connection(cred.metadata.name))
    known = ctx.index.connections.get(key)
    if known is None and key in ctx.index.unknown_connections:
        live = await ctx.io(ctx.kube.get, "v1", "Secret", key[0], key[1])
        if live is not None:
            known = (owner_uids(live), {k: base64.b64decode(v).decode()
                                        for k, v in (live.get("data") or {}).items()})
    # Otherwise the startup listing (and our own writes since) say it does not exist: no GET needed.
    if known is not None and cred.metadata.uid not in known[0]:
        raise Refused(Reason.SECRET_NOT_OWNED, f"Secret {key[1]} exists and is not owned by this "
                      "SmtpCredential: delete or rename it, the operator does not adopt objects")
    password = (known[1].get("password") if known else None) or (
        passwords.generate_password() if generate else None)
    desired = secrets.connection_secret(cred, cluster, password if generate else None)
    data = {k: base64.b64decode(v).decode() for k, v in desired["data"].items()}
    if known is None:
        # POST, not apply: if it appeared meanwhile, 409 (retried: the next round reads it) rather than
        # overwriting a password an app may already use.
        try:
            await ctx.io(ctx.kube.create, desired)
        except ApiError as error:
            if error.status == 409:
                ctx.index.unknown_connections.add(key)
            raise
    elif known[1] != data:
        await ctx.io(ctx.kube.apply, desired)
    ctx.index.connections[key] = ({cred.metadata.uid or ""}, data)
    ctx.index.unknown_connections.discard(key)
    return password if generate else None
