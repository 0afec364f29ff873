"""SmtpCredential → its connection Secret, its entry in the Cluster's credential table, and its status.

A new credential costs three API calls (Ready=False, the connection Secret, Ready=True); an unchanged one
after a restart costs none. Password verifiers come from the relay's ``passwords`` module.

Passwords over time: a rotation (``spec.rotation.requestedAt``, or a changed passwordSecretRef Secret)
keeps the replaced password's verifier in the entry until its grace period ends; the entry is the record of
them across restarts, the connection Secret's annotations record which requests its password answers.
A suspension is a flag on the entry: the credential stays served (Ready=True, reason Suspended)."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from mta_relay import config as rc
from mta_relay import passwords

from mta_operator import naming
from mta_operator.api import (
    API_VERSION,
    DEFAULT_GRACE_PERIOD,
    Authentication,
    Cluster,
    SmtpCredential,
    SmtpCredentialStatus,
    duration_seconds,
)
from mta_operator.api.reasons import ConditionType, Reason
from mta_operator.kube.apply import owner_uids
from mta_operator.kube.client import ApiError
from mta_operator.render import conditions, relay_config, secrets

from .context import Context
from .index import Connection, Index, Key, PendingRotation
from .table import Table

log = logging.getLogger("mta_operator.credential")
# Replaced passwords kept at once (rotating faster than the grace period): the oldest beyond go early.
MAX_PREVIOUS = 4
# Seconds from a table write until every MTA serves it: its watcher sees the manifest at once, the relay
# reloads within its 0.5 s poll; about 1-2 s measured on a loaded test bed (the deletion test's bound is
# 5 s). A rotated password reaches the connection Secret only after this.
TABLE_REACHES_MTAS = 5.0


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
        ctx.index.rotations.pop(key, None)  # deleted mid-rotation: its new password was never handed out
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
        secrets_of = await _passwords(ctx, cred, cluster, ck, table)
    except Refused as refused:
        if table is not None:
            table.remove(key)  # a credential that stops being served leaves the table at the next write
        await _refuse(ctx, cred, refused)
        return
    assert table is not None
    entry = relay_config.credential(cred, secrets_of.verifier, relay_config.mechanisms(cluster, cred),
                                    secrets_of.cram, secrets_of.previous)
    before = table.entries.get(key)
    if not table.put(key, entry) and table.served(key):
        await write_status(ctx, key)
    if before is not None and before.suspended != entry.suspended:
        outcome = served_outcome(cred, cluster)
        note = outcome.message if entry.suspended else "Resumed: the MTAs accept the credential again"
        await ctx.event(_ref(cred), "Normal", outcome.reason, note)


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
    if key in ctx.index.rotations:
        ctx.enqueue(("cred", key))  # the table accepting the new password is written: on to the Secret
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
    if cred.spec.suspended:
        # Ready stays True: the suspension is the state asked for, and it is in force. Ready=False would
        # hold Argo CD and Flux in Progressing for as long as the credential stays suspended.
        return Outcome(True, Reason.SUSPENDED, f"In the credential table of Cluster {name}, suspended: every "
                       "MTA refuses it (525 5.7.13); its Secret and passwords are kept")
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
    now = ctx.now()
    conds = conditions.put(_conditions(cred), ConditionType.READY, outcome.ok, outcome.reason,
                           outcome.message, cred.metadata.generation, now)
    served = outcome.ok or outcome.reason == Reason.CRAM_MD5_NOT_OFFERED
    if served:  # as the table says; a credential not in the table keeps what it last said
        if cred.spec.suspended:
            conds = conditions.put(conds, ConditionType.SUSPENDED, True, Reason.SUSPENDED,
                                   "spec.suspended: every MTA refuses the credential",
                                   cred.metadata.generation, now)
        else:
            conds = conditions.put(conds, ConditionType.SUSPENDED, False, Reason.NOT_SUSPENDED,
                                   "The MTAs accept the credential", cred.metadata.generation, now)
    return {"observedGeneration": cred.metadata.generation, "conditions": conds,
            "username": cred.effective_username, "summary": relay_config.summary(cred),
            "connectionSecretName": naming.connection(cred.metadata.name),
            "passwords": _password_status(ctx, cred) if served else []}


def _password_status(ctx: Context, cred: SmtpCredential) -> list[dict[str, str]]:
    """The passwords the written table accepts, newest first: times only."""
    table = ctx.tables.get(ctx.index.cluster_of(cred))
    entry = table.entries.get(Index.key(cred)) if table else None
    if entry is None or entry.authentication != "Password":
        return []
    conn = ctx.index.connections.get((cred.metadata.namespace or "", naming.connection(cred.metadata.name)))
    created = conn[2].get(naming.PASSWORD_CREATED) if conn else None
    newest = {"created": created} if created else {}
    return [newest, *({"expires": conditions.now_text(p.not_after),
                       **({"created": conditions.now_text(p.created)} if p.created else {})}
                      for p in entry.previous_verifiers)]


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


@dataclass(frozen=True)
class Passwords:
    """What the table entry says of a credential's passwords: the newest one's verifier, the password
    itself only for CRAM-MD5, and the replaced ones still in their grace period."""

    verifier: str | None
    cram: str | None = None
    previous: tuple[rc.PreviousVerifier, ...] = ()


async def _passwords(ctx: Context, cred: SmtpCredential, cluster: Cluster, ck: Key,
                     table: Table) -> Passwords:
    spec = cred.spec
    key = Index.key(cred)
    old = table.entries.get(key)
    known = (old.password_verifier if old else None) or ctx.known_verifiers.get((ck, cred.effective_username))
    conn = await _read_connection(ctx, cred)
    if spec.authentication == Authentication.SOURCE_IP:
        await _write_connection(ctx, cred, cluster, conn, None, {})
        return Passwords(None)
    now = ctx.now()
    previous = [p for p in (old.previous_verifiers if old else []) if p.not_after > now]
    marks = dict(conn[2]) if conn else {}
    if spec.password_secret_ref is not None:
        password = await _user_password(ctx, cred)
        verifier, previous = await _user_verifier(ctx, cred, known, password, previous, marks)
    else:
        password, verifier, previous = await _generated(ctx, cred, known, conn, previous, marks, table)
    previous = await _retire(ctx, cred, previous, marks)
    await _write_connection(ctx, cred, cluster, conn, None if spec.password_secret_ref else password, marks)
    # Look again when a replaced password expires (the relay refuses it by itself then; this takes it out
    # of the table) or when a new password may be handed out, whichever comes first.
    pending = ctx.index.rotations.get(key)
    wake = [p.not_after for p in previous] + ([pending.handout_at] if pending and pending.handout_at else [])
    if wake:
        ctx.schedule(("cred", key), max(0.0, (min(wake) - now).total_seconds()) + 0.5)
    return Passwords(verifier, _for_cram(cred, password), tuple(previous[:MAX_PREVIOUS]))


def _grace(cred: SmtpCredential) -> dt.timedelta:
    rotation = cred.spec.rotation
    return dt.timedelta(seconds=duration_seconds(rotation.grace_period if rotation else DEFAULT_GRACE_PERIOD))


def _stamp(when: dt.datetime | None) -> str:
    return conditions.now_text(when) if when is not None else ""


def _replaced(cred: SmtpCredential, verifier: str, marks: dict[str, str], now: dt.datetime
              ) -> rc.PreviousVerifier:
    created = marks.get(naming.PASSWORD_CREATED)
    # whole seconds, as status shows it: the table and status name the same instant
    return rc.PreviousVerifier(verifier=verifier, not_after=now.replace(microsecond=0) + _grace(cred),
                               created=dt.datetime.fromisoformat(created) if created else None)


async def _user_verifier(ctx: Context, cred: SmtpCredential, known: str | None, password: str,
                         previous: list[rc.PreviousVerifier], marks: dict[str, str]
                         ) -> tuple[str, list[rc.PreviousVerifier]]:
    """The user's password is rotated by changing their Secret: the verifier of the one it replaced stays
    valid for the grace period, as after a rotation of a generated password."""
    if known and not known.startswith(passwords.FAST_SCHEME) and \
            await ctx.io(passwords._verify_argon2, known, password.encode()):
        return known, previous
    back = [p for p in previous if not p.verifier.startswith(passwords.FAST_SCHEME)
            and await ctx.io(passwords._verify_argon2, p.verifier, password.encode())]
    verifier = back[0].verifier if back else await ctx.io(passwords.argon2_verifier, password)
    previous = [p for p in previous if p.verifier != verifier]
    if known is not None:  # a change, not a first sight
        now = ctx.now()
        previous.insert(0, _replaced(cred, known, marks, now))
        marks[naming.PASSWORD_CREATED] = conditions.now_text(now)
        await ctx.event(_ref(cred), "Normal", Reason.PASSWORD_ROTATED,
                        f"The passwordSecretRef Secret has a new password; the previous one works until "
                        f"{conditions.now_text(previous[0].not_after)}")
    else:
        marks.setdefault(naming.PASSWORD_CREATED, conditions.now_text(ctx.now()))
    return verifier, previous


async def _generated(ctx: Context, cred: SmtpCredential, known: str | None, conn: Connection | None,
                     previous: list[rc.PreviousVerifier], marks: dict[str, str], table: Table
                     ) -> tuple[str, str, list[rc.PreviousVerifier]]:
    """(password for the connection Secret, the newest verifier, previous ones). A rotation is two steps:
    the table first gets the new verifier (the old one moves to ``previous`` with its expiry), and only
    once that table is written does the new password go to the connection Secret (the next reconcile,
    enqueued by ``write_status``)."""
    key = Index.key(cred)
    now = ctx.now()
    request = _stamp(cred.spec.rotation.requested_at if cred.spec.rotation else None)
    password = conn[1].get("password") if conn else None
    if password is None:  # a new Secret (or a switch from passwordSecretRef): it answers the request now
        if known:
            previous = [_replaced(cred, known, marks, now), *previous]
        password = passwords.generate_password()
        marks.update({naming.PASSWORD_CREATED: conditions.now_text(now), naming.ROTATION_ANSWERED: request})
        return password, passwords.fast_verifier(password), previous
    match = None
    if known and not passwords.verify_fast(known, password.encode()):
        # The table is ahead of the Secret (a rotation under way, or cut short by a restart that lost its
        # password) or has no entry yet: the Secret's password is served, by its verifier if there is one.
        match = next((p for p in previous if passwords.verify_fast(p.verifier, password.encode())), None)
        known = match.verifier if match else None
        previous = [p for p in previous if p is not match]
    verifier = known or passwords.fast_verifier(password)
    pending = ctx.index.rotations.get(key)
    if pending is not None and pending.request != request:
        del ctx.index.rotations[key]  # asked for again, or withdrawn: start over
        pending = None
    if not request or request == marks.get(naming.ROTATION_ANSWERED):
        return password, verifier, previous
    # The Secret's password is being replaced. Its grace period counts from when the new one is handed
    # out (the app cannot switch before); until then it is valid for at least as long, from the start.
    handed_out = _replaced(cred, verifier, marks, now)
    hold = dt.timedelta(seconds=TABLE_REACHES_MTAS)
    waiting = [match or handed_out.model_copy(update={"not_after": handed_out.not_after + hold}), *previous]
    if pending is None:
        fresh = passwords.generate_password()
        pending = PendingRotation(request, fresh, passwords.fast_verifier(fresh), conditions.now_text(now))
        ctx.index.rotations[key] = pending
        return password, pending.verifier, waiting
    entry = table.entries.get(key)
    if not (table.served(key) and entry is not None and entry.password_verifier == pending.verifier):
        return password, pending.verifier, waiting  # the table that accepts it is not written yet
    handout_at = pending.handout_at
    if handout_at is None:
        # Written, but each MTA loads it a moment later (its watcher, then its reload poll): the password
        # waits that long too, or an app that reads its Secret at once could be refused.
        handout_at = now + hold
        ctx.index.rotations[key] = dataclasses.replace(pending, handout_at=handout_at)
    if now < handout_at:
        return password, pending.verifier, waiting
    del ctx.index.rotations[key]
    replaced = [handed_out, *previous]
    marks.update({naming.PASSWORD_CREATED: pending.created, naming.ROTATION_ANSWERED: request})
    await ctx.event(_ref(cred), "Normal", Reason.PASSWORD_ROTATED,
                    f"New password in Secret {naming.connection(cred.metadata.name)}; the previous one works "
                    f"until {conditions.now_text(replaced[0].not_after)}")
    return pending.password, pending.verifier, replaced


async def _retire(ctx: Context, cred: SmtpCredential, previous: list[rc.PreviousVerifier],
                  marks: dict[str, str]) -> list[rc.PreviousVerifier]:
    """Every replaced password goes when spec.rotation.retireRequestedAt has a value not answered yet
    (once a rotation under way has put its new password in the Secret)."""
    retire = _stamp(cred.spec.rotation.retire_requested_at if cred.spec.rotation else None)
    if not retire or retire == marks.get(naming.RETIRE_ANSWERED) or Index.key(cred) in ctx.index.rotations:
        return previous
    marks[naming.RETIRE_ANSWERED] = retire
    if previous:
        await ctx.event(_ref(cred), "Normal", Reason.PASSWORDS_RETIRED,
                        f"{len(previous)} replaced password(s) retired by spec.rotation.retireRequestedAt")
    return []


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


async def _read_connection(ctx: Context, cred: SmtpCredential) -> Connection | None:
    """The connection Secret as last read or written (read now if a 409 said it appeared meanwhile);
    refused when it is not this credential's."""
    key = (cred.metadata.namespace or "", naming.connection(cred.metadata.name))
    known = ctx.index.connections.get(key)
    if known is None and key in ctx.index.unknown_connections:
        live = await ctx.io(ctx.kube.get, "v1", "Secret", key[0], key[1])
        if live is not None:
            ours = {k: v for k, v in (live["metadata"].get("annotations") or {}).items()
                    if k.startswith(naming.PREFIX + "/")}
            known = (owner_uids(live), {k: base64.b64decode(v).decode()
                                        for k, v in (live.get("data") or {}).items()}, ours)
    # Otherwise the startup listing (and our own writes since) say it does not exist: no GET needed.
    if known is not None and cred.metadata.uid not in known[0]:
        raise Refused(Reason.SECRET_NOT_OWNED, f"Secret {key[1]} exists and is not owned by this "
                      "SmtpCredential: delete or rename it, the operator does not adopt objects")
    return known


async def _write_connection(ctx: Context, cred: SmtpCredential, cluster: Cluster, known: Connection | None,
                            password: str | None, marks: dict[str, str]) -> None:
    """Ensure the connection Secret holds ``password`` (None: no password in it) and ``marks``."""
    key = (cred.metadata.namespace or "", naming.connection(cred.metadata.name))
    desired = secrets.connection_secret(cred, cluster, password, marks)
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
    elif (known[1], known[2]) != (data, marks):
        await ctx.io(ctx.kube.apply, desired)
    ctx.index.connections[key] = ({cred.metadata.uid or ""}, data, dict(marks))
    ctx.index.unknown_connections.discard(key)
