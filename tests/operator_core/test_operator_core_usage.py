"""SmtpCredential.status.usage in process: the MTAs' usage reports (injected where the operator asks
each MTA, ``reconcile.usage._ask``) summed into each credential's status, only changed ones patched,
the MTAs listed in the settings' quotaExchange; and the pure sum (``usage_statuses``) with a fixed clock."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import yaml
from mta_operator import naming
from mta_operator.reconcile import usage as reconcile_usage
from mta_relay import usage
from mta_relay.quota import Count
from operator_core.conftest import NAMESPACE, Core, cluster_and_domains, credentials, wait_for

pytestmark = pytest.mark.unit
NOW = dt.datetime.now(dt.UTC)
DAY = NOW.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
MONTH = NOW.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()
PODS = {naming.pod("main", i): f"10.9.0.{i + 1}" for i in range(3)}


def _pod(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": naming.workload_selector("main")}}


def _report(mta: str, counts: dict[str, Count]) -> usage.Report:
    return usage.Report(mta=mta, epoch="e", seq=1, full=True, counts=counts)


def test_usage_statuses_sum_the_current_period_and_take_the_latest_use() -> None:
    creds = {("mail", "billing"): reconcile_usage.Counted(1, "billing", "Day", 100),
             ("mail", "helpdesk"): reconcile_usage.Counted(1, "helpdesk", "Month", None),
             ("mail", "idle"): reconcile_usage.Counted(1, "idle", "Day", 5)}
    reports = [_report("m-0", {"billing": Count(DAY, 40, DAY + 10, "192.0.2.1"),
                               "helpdesk": Count(MONTH, 3, MONTH + 5, "192.0.2.9")}),
               _report("m-1", {"billing": Count(DAY, 2, DAY + 99, "2001:db8::7")}),
               _report("m-2", {"billing": Count(DAY - 86400, 500, DAY - 5, "192.0.2.3")})]  # yesterday
    found = reconcile_usage.usage_statuses(creds, reports, NOW.timestamp())
    start = dt.datetime.fromtimestamp(DAY, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    last = dt.datetime.fromtimestamp(DAY + 99, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert found[("mail", "billing")] == {"sent": 42, "periodStart": start, "remaining": 58,
                                          "lastUsedTime": last, "lastUsedFrom": "2001:db8::7"}
    assert found[("mail", "helpdesk")]["sent"] == 3
    assert "remaining" not in found[("mail", "helpdesk")]  # no quota, nothing remains to say
    assert ("mail", "idle") not in found  # never used: no usage to show
    written = dict(found)
    assert reconcile_usage.changed(found, written) == []
    written[("mail", "billing")] = {**found[("mail", "billing")], "sent": 41}
    assert reconcile_usage.changed(found, written) == [("mail", "billing")]


async def test_reports_from_every_mta_reach_status_and_only_changes_are_written(
        core: Core, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconcile_usage, "POLL_SECONDS", 0.05)
    counts: dict[str, dict[str, Count]] = {
        ip: {"billing": Count(DAY, 10 * (i + 1), DAY + i, f"192.0.2.{i}")}
        for i, ip in enumerate(PODS.values())}
    names = {ip: name for name, ip in PODS.items()}
    asked: list[str] = []

    def ask(address: str, token: str, cert: bytes) -> usage.Report | None:
        asked.append(address)
        assert token
        assert cert.startswith(b"-----BEGIN CERTIFICATE-----")
        return _report(names[address], dict(counts[address]))
    monkeypatch.setattr(reconcile_usage, "_ask", ask)
    patched: list[str] = []
    real = core.kube.patch_status

    def counting(api_version: str, kind: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        if kind == "SmtpCredential" and "usage" in status:
            patched.append(name)
        real(api_version, kind, namespace, name, status)
    monkeypatch.setattr(core.kube, "patch_status", counting)
    core.apply(*cluster_and_domains(), *credentials("billing", "newsletter"),
               *(_pod(n) for n in PODS))
    for name, ip in PODS.items():  # the kubelet's part
        core.kube.patch_status("v1", "Pod", NAMESPACE, name, {"podIP": ip})
    await core.start()

    def billing() -> dict[str, Any]:
        return ((core.cr("SmtpCredential", "billing") or {}).get("status") or {}).get("usage") or {}
    first = await wait_for(lambda: billing().get("sent") == 60 and billing(), "usage.sent 60")
    assert first["remaining"] == 10000 - 60
    assert first["lastUsedFrom"] == "192.0.2.2"  # the latest use, on the third MTA
    assert "usage" not in (core.cr("SmtpCredential", "newsletter") or {}).get("status", {})
    settings = yaml.safe_load(core.kube.stored("v1", "ConfigMap", NAMESPACE, naming.settings("main"))
                              ["data"]["relay.yaml"])
    assert {p["name"]: p["url"] for p in settings["quotaExchange"]["peers"]} == {
        n: f"https://{ip}:8080" for n, ip in PODS.items()}

    # Nothing changes: polls go on (one request per MTA each), no status write.
    writes, polls = len(patched), len(asked)
    await wait_for(lambda: len(asked) >= polls + 6, "two more polls")
    assert len(patched) == writes == 1

    # One MTA sends more, another stops answering: its last answer still counts.
    ip0, ip1 = list(PODS.values())[:2]
    counts[ip0]["billing"] = Count(DAY, 15, DAY + 50, "198.51.100.4")
    del names[ip1]
    monkeypatch.setattr(reconcile_usage, "_ask", lambda a, t, c: _report(names[a], dict(counts[a]))
                        if a in names else None)
    later = await wait_for(lambda: billing().get("sent") == 65 and billing(), "usage.sent 65")
    assert later["lastUsedFrom"] == "198.51.100.4"
