"""Start-up: a new operator process lists what exists, indexes it and reconciles each object once; what
it finds converged costs no writes (same passwords, same verifiers, no status patch), what changed while
no operator ran is caught up (a deleted credential leaves the table, a new one is served), and what the
previous process left in flight (a table write that never landed) converges."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from mta_operator.api import API_VERSION
from mta_operator.reconcile import credential as reconcile_credential
from mta_relay import passwords as relay_passwords
from operator_core.conftest import NAMESPACE, Core, credentials, wait_for
from support.examples import examples
from support.objects import condition, decoded, table

pytestmark = pytest.mark.unit


def _username(doc: dict[str, Any]) -> str:
    return doc["spec"].get("username") or doc["metadata"]["name"]


def _creds() -> list[dict[str, Any]]:
    return [d for d in examples(NAMESPACE) if d["kind"] == "SmtpCredential"]


def _late() -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "SmtpCredential",
            "metadata": {"name": "late", "namespace": NAMESPACE},
            "spec": {"clusterRef": {"name": "main"}, "domains": {"mode": "AllClusterDomains"}}}


async def _all_ready(core: Core, names: list[str]) -> None:
    await wait_for(lambda: all(condition(core.cr("SmtpCredential", n), "Ready").get("status") == "True"
                               for n in names), f"{names} Ready")


async def _quiet(core: Core) -> None:
    """Until the queue is empty and every table written."""
    assert core.ctl is not None
    ctl = core.ctl
    await wait_for(lambda: len(ctl.queue) == 0 and not any(t.dirty.is_set() or t.pending
                                                           for t in ctl.tables.values()), "quiet")


async def test_a_restart_reconciles_each_object_once_and_catches_up(core: Core,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    core.apply(*examples(NAMESPACE))
    await core.start()
    names = [d["metadata"]["name"] for d in _creds()]
    await _all_ready(core, names)
    await _quiet(core)
    passwords = {n: decoded(core.kube.stored("v1", "Secret", NAMESPACE, f"{n}-smtp")).get("password")
                 for n in names}
    before = table(core.kube, NAMESPACE, "main")
    await core.stop()

    # While no operator runs: one credential is deleted (its Secret garbage-collected), one is added.
    gone = "billing"
    core.kube.delete_now(API_VERSION, "SmtpCredential", NAMESPACE, gone)
    core.apply(_late())
    reconciled: Counter[str] = Counter()
    real = reconcile_credential.reconcile

    async def counted(ctx: Any, key: tuple[str, str]) -> None:
        reconciled[key[1]] += 1
        await real(ctx, key)

    monkeypatch.setattr(reconcile_credential, "reconcile", counted)
    core.kube.log.clear()
    await core.start()
    await _all_ready(core, [*[n for n in names if n != gone], "late"])
    await _quiet(core)

    kept = [n for n in names if n != gone]
    assert reconciled == Counter({n: 1 for n in [*kept, "late"]})
    after = table(core.kube, NAMESPACE, "main")
    gone_user = next(_username(d) for d in _creds() if d["metadata"]["name"] == gone)
    assert gone_user not in after
    assert "late" in after
    for doc in _creds():
        if doc["metadata"]["name"] != gone:  # the same entry: the verifier was reused, not re-derived
            assert after[_username(doc)] == before[_username(doc)]
    for n in kept:
        secret = core.kube.stored("v1", "Secret", NAMESPACE, f"{n}-smtp")
        assert decoded(secret).get("password") == passwords[n]
    # Converged objects cost no writes: no status patch, no connection Secret written.
    writes = [(verb, kind, name) for verb, kind, name in core.kube.log if verb not in {"get", "list"}]
    for n in kept:
        assert ("patch_status", "SmtpCredential", n) not in writes
        assert not any(kind == "Secret" and name == f"{n}-smtp" for _, kind, name in writes)
    assert ("patch_status", "SmtpCredential", "late") in writes
    # The start-up listing read every kind once, and the operator's own Secrets.
    lists = Counter(kind for verb, kind, _ in core.kube.log if verb == "list")
    assert {k: lists[k] for k in ("Cluster", "SendingDomain", "SmtpCredential")} == \
        {"Cluster": 1, "SendingDomain": 1, "SmtpCredential": 1}


async def test_a_table_write_left_in_flight_by_the_previous_process_converges(core: Core) -> None:
    core.apply(*[d for d in examples(NAMESPACE) if d["kind"] in {"Cluster", "SendingDomain"}])
    core.apply(*credentials("billing"))
    await core.start()
    await _all_ready(core, ["billing"])
    # The manifest cannot be written any more; a new credential is waiting for it when the process dies.
    core.kube.fail("apply", "Secret", "main-mta-credentials")
    core.apply(*credentials("newsletter"))
    await wait_for(lambda: condition(core.cr("SmtpCredential", "newsletter"), "Ready").get("reason")
                   == "Reconciling" and core.kube.stored("v1", "Secret", NAMESPACE, "newsletter-smtp"),
                   "newsletter waiting for the table")
    await core.stop()
    assert "newsletter" not in table(core.kube, NAMESPACE, "main")

    core.kube.heal()
    await core.start()
    await _all_ready(core, ["billing", "newsletter"])
    password = decoded(core.kube.stored("v1", "Secret", NAMESPACE, "newsletter-smtp"))["password"]
    entry = table(core.kube, NAMESPACE, "main")["newsletter@example.com"]
    assert relay_passwords.verify_fast(entry["passwordVerifier"], password.encode())
