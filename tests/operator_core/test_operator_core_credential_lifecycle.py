"""A credential's lifecycle through the real core over the fake API: a rotation puts two verifiers in the
table (the new password in the connection Secret only once the table accepting it is written) and lists
both in status with the old one's expiry; the old one leaves the table at its expiry or when retired; a
user's own password changed in its Secret keeps the previous one for the grace period; a suspension
flags the table entry (the Secret stays) and is undone by unsuspending."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import pytest
from mta_operator.api import API_VERSION
from mta_operator.reconcile import credential as reconcile_credential
from mta_relay import passwords
from operator_core.conftest import NAMESPACE, Core, cluster_and_domains, wait_for
from support.objects import condition, decoded, table

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _quick_hand_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MTA reloads here: the wait before a rotated password is handed out only costs time."""
    monkeypatch.setattr(reconcile_credential, "TABLE_REACHES_MTAS", 1.0)


def _cred(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "SmtpCredential",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"clusterRef": {"name": "main"}, "domains": {"mode": "AnyDomain"}, **spec}}


def _password(core: Core, cred: str) -> str:
    return decoded(core.kube.stored("v1", "Secret", NAMESPACE, f"{cred}-smtp"))["password"]


def _entry(core: Core, username: str) -> dict[str, Any] | None:
    return table(core.kube, NAMESPACE, "main").get(username)


def _accepts(entry: dict[str, Any] | None, password: str) -> bool:
    """Whether the table entry's verifiers (newest, or a previous one not expired) take ``password``."""
    if entry is None:
        return False
    now = dt.datetime.now(dt.UTC)
    live = [entry["passwordVerifier"], *(p["verifier"] for p in entry.get("previousVerifiers", [])
                                         if dt.datetime.fromisoformat(p["notAfter"]) > now)]
    return any(passwords.verify_fast(v, password.encode()) for v in live)


def _stamp(seconds_ago: float = 0) -> str:
    return (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_rotate_then_retire_by_hand(core: Core) -> None:
    core.apply(*cluster_and_domains())
    await core.start()
    core.apply(_cred("app"))
    await core.ready("SmtpCredential", "app")
    old = _password(core, "app")
    assert len(core.cr("SmtpCredential", "app")["status"]["passwords"]) == 1

    core.apply(_cred("app", rotation={"requestedAt": _stamp(), "gracePeriod": "24h"}))
    new = await wait_for(lambda: (p := _password(core, "app")) != old and p, "a new password in the Secret")
    entry = _entry(core, "app")
    assert _accepts(entry, old)
    assert _accepts(entry, new)
    assert passwords.verify_fast(entry["passwordVerifier"], new.encode())
    [previous] = entry["previousVerifiers"]
    expires = dt.datetime.fromisoformat(previous["notAfter"])
    assert dt.timedelta(hours=23, minutes=59) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(hours=24)
    status = await wait_for(lambda: len((s := core.cr("SmtpCredential", "app")["status"])["passwords"]) == 2
                            and s, "status listing two passwords")
    newest, replaced = status["passwords"]
    assert "expires" not in newest
    assert newest["created"]
    assert dt.datetime.fromisoformat(replaced["expires"]) == expires
    assert replaced["created"]  # the old password's own creation time, carried through the table
    secret = core.kube.stored("v1", "Secret", NAMESPACE, "app-smtp")
    assert old not in str(secret["metadata"])
    assert new not in str(secret["metadata"])
    assert old not in str(status)
    assert new not in str(status)
    await wait_for(lambda: any(e["reason"] == "PasswordRotated" for e in core.kube.posted_events),
                   "the Event")

    # The same request is answered once (GitOps re-applies it at every sync); a retire request drops
    # the replaced password before its expiry.
    core.apply(_cred("app", rotation={"requestedAt": _rotation(core), "retireRequestedAt": _stamp()}))
    await wait_for(lambda: len(core.cr("SmtpCredential", "app")["status"]["passwords"]) == 1,
                   "status listing one password")
    entry = await wait_for(lambda: (e := _entry(core, "app")) and "previousVerifiers" not in e and e,
                           "the replaced verifier out of the table")
    assert _accepts(entry, new)
    assert not _accepts(entry, old)
    assert _password(core, "app") == new


def _rotation(core: Core) -> str:
    return core.cr("SmtpCredential", "app")["spec"]["rotation"]["requestedAt"]


async def test_a_replaced_password_leaves_the_table_at_its_expiry(core: Core) -> None:
    core.apply(*cluster_and_domains())
    await core.start()
    core.apply(_cred("brief"))
    await core.ready("SmtpCredential", "brief")
    old = _password(core, "brief")
    core.apply(_cred("brief", rotation={"requestedAt": _stamp(), "gracePeriod": "2s"}))
    await wait_for(lambda: _password(core, "brief") != old, "the new password")
    assert "previousVerifiers" in _entry(core, "brief")
    entry = await wait_for(lambda: (e := _entry(core, "brief")) and "previousVerifiers" not in e and e,
                           "the expired verifier out of the table", within=10)
    assert not _accepts(entry, old)
    assert _accepts(entry, _password(core, "brief"))
    await wait_for(lambda: len(core.cr("SmtpCredential", "brief")["status"]["passwords"]) == 1,
                   "status listing one password")


async def test_a_changed_own_password_keeps_the_previous_one_for_the_grace_period(core: Core) -> None:
    def own(value: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "own-pw", "namespace": NAMESPACE},
                "data": {"password": base64.b64encode(value.encode()).decode()}}

    core.apply(*cluster_and_domains(), own("first-password"))
    await core.start()
    byo = _cred("byo", passwordSecretRef={"name": "own-pw", "key": "password"},
                rotation={"gracePeriod": "1h"})
    core.apply(byo)
    await core.ready("SmtpCredential", "byo")
    core.apply(own("second-password"))
    # The operator reads a user's Secret at each reconcile of the credential (and at every resync).
    core.apply({**byo, "spec": {**byo["spec"], "description": "touched"}})
    entry = await wait_for(lambda: (e := _entry(core, "byo")) and e.get("previousVerifiers") and e,
                           "the previous verifier kept")
    assert passwords._verify_argon2(entry["passwordVerifier"], b"second-password")
    [previous] = entry["previousVerifiers"]
    assert passwords._verify_argon2(previous["verifier"], b"first-password")
    left = dt.datetime.fromisoformat(previous["notAfter"]) - dt.datetime.now(dt.UTC)
    assert dt.timedelta(minutes=59) < left <= dt.timedelta(hours=1)
    assert "password" not in decoded(core.kube.stored("v1", "Secret", NAMESPACE, "byo-smtp"))


async def test_suspend_and_resume(core: Core) -> None:
    core.apply(*cluster_and_domains())
    await core.start()
    core.apply(_cred("paused"))
    ready = await core.ready("SmtpCredential", "paused")
    assert condition(ready, "Suspended")["status"] == "False"
    password = _password(core, "paused")

    core.apply(_cred("paused", suspended=True))
    await wait_for(lambda: (_entry(core, "paused") or {}).get("suspended") is True, "the entry flagged")
    cred = await wait_for(lambda: (o := core.cr("SmtpCredential", "paused"))
                          and condition(o, "Suspended").get("status") == "True" and o, "Suspended=True")
    assert condition(cred, "Ready")["status"] == "True"  # the state asked for, in force
    assert condition(cred, "Ready")["reason"] == "Suspended"
    assert cred["status"]["summary"].startswith("Suspended: ")
    assert _password(core, "paused") == password  # nothing deleted
    await wait_for(lambda: any(e["reason"] == "Suspended" for e in core.kube.posted_events), "the Event")

    core.apply(_cred("paused"))
    await wait_for(lambda: "suspended" not in (_entry(core, "paused") or {"suspended": True}), "flag gone")
    cred = await wait_for(lambda: (o := core.cr("SmtpCredential", "paused"))
                          and condition(o, "Suspended").get("status") == "False" and o, "Suspended=False")
    assert condition(cred, "Ready")["reason"] == "Serving"
    assert _accepts(_entry(core, "paused"), password)


async def test_a_restart_keeps_the_replaced_password_and_answers_no_request_twice(core: Core) -> None:
    """The table (replaced verifiers, their expiry and creation) and the connection Secret's annotations
    (the request answered) are the operator's memory of a rotation across restarts."""
    core.apply(*cluster_and_domains())
    await core.start()
    rotated = _cred("kept", rotation={"requestedAt": _stamp(60)})  # answered at creation: no rotation
    core.apply(rotated)
    await core.ready("SmtpCredential", "kept")
    first = _password(core, "kept")
    core.apply(_cred("kept", rotation={"requestedAt": _stamp()}))
    second = await wait_for(lambda: (p := _password(core, "kept")) != first and p, "the new password")
    before = await wait_for(lambda: len((s := core.cr("SmtpCredential", "kept")["status"])["passwords"]) == 2
                            and s["passwords"], "two passwords in status")
    await core.stop()

    await core.start()
    await core.ready("SmtpCredential", "kept")
    entry = _entry(core, "kept")
    assert _accepts(entry, first)
    assert _accepts(entry, second)
    assert _password(core, "kept") == second
    assert core.cr("SmtpCredential", "kept")["status"]["passwords"] == before
