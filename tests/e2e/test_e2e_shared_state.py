"""End to end on the test bed, 3 MTAs, what the MTAs of a cluster share among themselves:

- a credential's usage in status (``status.usage``: sent, remaining, last use) true within seconds of mail
  sent through all three, the quota holding for the cluster, the printer columns, and the counts
  surviving an MTA's replacement (they are on its volume);
- the suppression list: a hard bounce on one MTA refused on another within seconds, and
  ``kubectl mta suppressions`` adding, listing, importing, removing and expiring entries on every MTA."""

from __future__ import annotations

import json
import time

import pytest
from e2ekit import CLUSTER, auth_code, figure, kubectl_mta, mail_code, message, rcpt_code, submit, submit_many
from mta_operator import naming
from support.waiting import wait_until

pytestmark = pytest.mark.testbed
QUOTA = 30


def _usage(chain) -> dict:
    return chain.get("smtpcredential", "metered").get("status", {}).get("usage") or {}


def test_usage_in_status_within_seconds_and_the_quota_holds_for_the_cluster(chain):
    chain.scale(3)
    chain.apply({"apiVersion": "mta-operator.io/v1alpha1", "kind": "SmtpCredential",
                 "metadata": {"name": "metered", "namespace": chain.namespace},
                 "spec": {"clusterRef": {"name": CLUSTER}, "domains": {"mode": "Specific",
                                                                       "names": ["example.com"]},
                          "quota": {"messages": QUOTA, "period": "Day"}}})
    password = chain.connection("metered")["password"]
    port, tls = chain.port(587), chain.tls
    ips = sorted(chain.addresses())
    assert len(ips) == 3
    # AUTH only: a probe that sent a message would spend quota each time it is repeated.
    wait_until(lambda: all(auth_code(ip, port, tls, "metered", password) == 235 for ip in ips),
               what="the credential live on every MTA")
    per_mta = QUOTA // 3  # the whole quota, spread over the three MTAs
    for ip in ips:
        batch = [message("app@example.com", "usage@example.net") for _ in range(per_mta)]
        codes = submit_many(ip, port, tls, "metered", password,
                            [("app@example.com", "usage@example.net", data) for _, data in batch])
        assert codes == [250] * per_mta
    sent_at = time.time()
    usage = wait_until(lambda: (u := _usage(chain)).get("sent") == QUOTA and u, timeout=30,
                       interval=0.2, what=f"status.usage.sent {QUOTA}")
    figure("usage: last message accepted to status.usage.sent right (s)", round(time.time() - sent_at, 1))
    assert usage["remaining"] == 0
    assert usage["lastUsedFrom"] == "127.0.0.1"
    last = time.mktime(time.strptime(usage["lastUsedTime"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert sent_at - 30 <= last <= sent_at + 1

    # Used up on every MTA, whichever the client reaches, once the MTAs have exchanged their counts (every
    # second: an MTA may not have heard a peer's last charges when status already shows them).
    wait_until(lambda: all(mail_code(ip, port, tls, "metered", password, "app@example.com") == 452
                           for ip in ips), timeout=10, interval=0.2, what="every MTA refusing at MAIL FROM")
    figure("usage: last message accepted to every MTA refusing (s)", round(time.time() - sent_at, 1))
    for ip in ips:
        over = submit(ip, port, tls, username="metered", password=password, mail_from="app@example.com")
        assert (over.stage, over.code) == ("mail", 452), over

    table = chain.kubectl("get", "smtpcredential", "metered").stdout
    header, row = table.splitlines()[:2]
    # kubectl aligns columns by position (the Summary column has spaces in it)
    assert row[header.index("SENT"):].split()[0] == str(QUOTA)
    assert row[header.index("LAST USED"):].split()[0][-1] in "sm"  # an age: "12s", "1m5s"

    # An MTA replaced: its counts are on its volume, so neither status nor the quota forget them.
    victim = sorted(chain.ready_pods())[0]
    chain.kubectl("delete", "pod", victim, "--wait=false")
    wait_until(lambda: victim not in chain.ready_pods(), timeout=60, what="the MTA gone")
    chain.settle(3)
    assert _usage(chain)["sent"] == QUOTA
    ip = chain.ready_pods()[victim]
    again = submit(ip, port, tls, username="metered", password=password, mail_from="app@example.com")
    assert (again.stage, again.code) == ("mail", 452), again
    settings = chain.get("configmap", naming.settings(CLUSTER))["data"]["relay.yaml"]
    assert settings.count("https://") >= 3  # the quotaExchange list names the three MTAs


def _rcpt_everywhere(chain, rcpt: str) -> list[int]:
    creds, port, tls = chain.connection("billing"), chain.port(587), chain.tls
    return [rcpt_code(ip, port, tls, "billing", creds["password"], "billing@example.com", rcpt)
            for ip in sorted(chain.addresses())]


def test_a_hard_bounce_on_one_mta_is_refused_on_the_others_within_seconds(chain):
    chain.scale(3)
    gone = "gone-for-good@example.net"
    chain.receiver.receiver.script(f"rcpt:{gone}", "550 5.1.1 <gone-for-good@example.net>: Recipient "
                                                   "address rejected: User unknown", times=100)
    first = sorted(chain.addresses())[0]
    reply = submit(first, chain.port(587), chain.tls, username="billing",
                   password=chain.connection("billing")["password"], mail_from="billing@example.com",
                   rcpt=gone)
    assert reply.accepted, reply
    sent = time.monotonic()
    wait_until(lambda: _rcpt_everywhere(chain, gone) == [550] * 3, timeout=60, interval=0.2,
               what="every MTA refusing the recipient that bounced")
    figure("suppressions: submission to every MTA refusing the bounced recipient (s)",
           round(time.monotonic() - sent, 1))
    listed = kubectl_mta(chain, "suppressions", "list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    (entry,) = [e for e in json.loads(listed.stdout)["entries"] if e["address"] == gone]
    assert (entry["reason"], entry["source"], entry["addedBy"]) == ("InvalidRecipient", "Bounce", "billing")
    assert "5.1.1" in entry["detail"]

    removed = kubectl_mta(chain, "suppressions", "remove", gone)
    assert removed.returncode == 0, removed.stderr
    wait_until(lambda: _rcpt_everywhere(chain, gone) == [250] * 3, timeout=30, interval=0.2,
               what="the removal in force on every MTA")


def test_kubectl_mta_suppressions_import_and_expiry_reach_every_mta(chain, tmp_path):
    chain.scale(3)
    count = 20_000
    lines = ["email"] + [f"imported-{i:06d}@customer.example" for i in range(count)]
    started = time.monotonic()
    imported = kubectl_mta(chain, "suppressions", "import", "-", stdin="\n".join(lines) + "\n")
    assert imported.returncode == 0, imported.stderr
    took = time.monotonic() - started
    last = lines[-1]
    wait_until(lambda: _rcpt_everywhere(chain, last) == [550] * 3, timeout=120, interval=0.5,
               what=f"the last of {count} imported addresses refused on every MTA")
    figure(f"suppressions: import of {count} with kubectl mta (s)", round(took, 1))
    figure(f"suppressions: import of {count} to every MTA refusing the last (s)",
           round(time.monotonic() - started, 1))
    shown = kubectl_mta(chain, "suppressions", "list", "--prefix", "imported-00001", "-o", "json")
    assert len(json.loads(shown.stdout)["entries"]) == 10  # imported-000010 .. imported-000019
    exported = tmp_path / "export.jsonl"
    assert kubectl_mta(chain, "suppressions", "export", str(exported)).returncode == 0
    assert sum(1 for line in exported.read_text().splitlines()
               if json.loads(line)["address"].startswith("imported-")) == count

    brief = "brief@customer.example"
    added = kubectl_mta(chain, "suppressions", "add", brief, "--reason", "Complaint", "--expires-in", "20s")
    assert added.returncode == 0, added.stderr
    refused: set[int] = set()  # the MTAs (by position) seen refusing it before it expired

    def seen_refusing_everywhere() -> bool:
        refused.update(i for i, code in enumerate(_rcpt_everywhere(chain, brief)) if code == 550)
        return len(refused) == 3

    wait_until(seen_refusing_everywhere, timeout=20, interval=0.2, what="the address refused on every MTA")
    wait_until(lambda: _rcpt_everywhere(chain, brief) == [250] * 3, timeout=40, interval=0.5,
               what="the entry expired on every MTA")
