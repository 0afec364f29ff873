"""Queue administration on the test bed: ``kubectl mta queue`` asking three MTAs through the API server's
pod proxy and merging their answers — ls, show, retry, bounce and suspend/resume, each checked at the
receiving server and in the MTAs' events — and refused to a user without the right to proxy to the pods
(or, for the actions, without ``create`` on ``pods/proxy``).

The tests share one chain (module fixture, three MTAs) and run in file order."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from durability import kill_relay, wait_ready
from e2ekit import HOSTNAME, kubectl_mta, message
from support.waiting import wait_until

pytestmark = pytest.mark.testbed
SENDER = "billing@example.com"
BUSY = "451 4.2.0 Mailbox busy, try again later"


def ok(chain: Any, *args: str) -> str:
    done = kubectl_mta(chain, *args)
    assert done.returncode == 0, f"kubectl mta {' '.join(args)}: {done.stdout}\n{done.stderr}"
    return done.stdout


async def _send(ip: str, port: int, tls: ssl.SSLContext, password: str, rcpt: str, data: bytes) -> None:
    smtp = aiosmtplib.SMTP(hostname=ip, port=port, start_tls=False, timeout=15)
    await smtp.connect()
    try:
        await smtp.starttls(server_hostname=HOSTNAME, tls_context=tls)
        await smtp.login("billing", password)
        await smtp.sendmail(SENDER, [rcpt], data)
    finally:
        smtp.close()


def send(chain: Any, ip: str, rcpt: str) -> str:
    """One message from billing to ``rcpt`` through the MTA at ``ip``; its token (Subject, Message-ID)."""
    token, data = message(SENDER, rcpt)
    asyncio.run(_send(ip, chain.port(587), chain.tls, chain.connection("billing")["password"], rcpt, data))
    return token


def delivered_to(chain: Any, rcpt: str) -> list[Any]:
    return [tx for tx in chain.receiver.transactions if rcpt in tx.rcpt_tos]


def queue_json(chain: Any) -> dict[str, Any]:
    return json.loads(ok(chain, "queue", "ls", "-o", "json"))


def counts(chain: Any) -> dict[tuple[str, str], int]:
    return {(g["domain"], g["state"]): g["messages"] for g in queue_json(chain)["summary"]}


def events(chain: Any, *query: str) -> list[dict[str, Any]]:
    return list(json.loads(ok(chain, "messages", *query, "-o", "json"))["events"])


@pytest.fixture(scope="module")
def three(chain: Any) -> dict[str, str]:
    """Three MTAs: pod name → IP."""
    chain.scale(3)
    return wait_ready(chain, 3)


def test_ls_and_show_merge_what_three_mtas_hold(chain: Any, three: dict[str, str]) -> None:
    rx = chain.receiver.receiver
    for i, ip in enumerate(three.values()):
        rx.script(f"rcpt:q{i}@slow.example", BUSY, times=1000)
        send(chain, ip, f"q{i}@slow.example")
    wait_until(lambda: counts(chain) == {("slow.example", "deferred"): 3}, timeout=60, interval=1,
               what="one deferred message on each of the three MTAs")
    listed = ok(chain, "queue", "ls")
    (row,) = [line.split() for line in listed.splitlines() if line.startswith("slow.example")]
    assert row[:3] == ["slow.example", "deferred", "3"]
    assert "3 messages queued on 3 MTAs" in listed
    per_mta = queue_json(chain)["messages"]
    assert sorted(per_mta) == sorted(three)
    assert set(per_mta.values()) == {1}

    (reception,) = events(chain, "--recipient", "q0@slow.example", "--type", "Reception")
    shown = ok(chain, "queue", "show", reception["id"])
    assert f"on {reception['mta']}" in shown
    assert "credential billing" in shown
    assert any(line.split()[:2] == ["q0@slow.example", "deferred"] and "451 4.2.0" in line
               for line in shown.splitlines())
    assert "--- message ---" not in shown
    assert "Sent through the whole chain" not in shown
    with_body = ok(chain, "queue", "show", reception["id"], "--body")
    assert "Sent through the whole chain" in with_body
    missing = kubectl_mta(chain, "queue", "show", "0" * 26)
    assert missing.returncode == 1
    assert "not queued on any MTA" in missing.stderr
    bad = kubectl_mta(chain, "queue", "retry", "--domain", "not a domain")
    assert bad.returncode == 1
    assert "--domain 'not a domain'" in bad.stderr


def test_retry_delivers_now_at_the_receiver(chain: Any, three: dict[str, str]) -> None:
    (reception,) = events(chain, "--recipient", "q0@slow.example", "--type", "Reception")
    chain.receiver.receiver.unscript("rcpt:q0@slow.example")  # the queue would wait minutes for its retry
    said = ok(chain, "queue", "retry", reception["id"])
    assert "retrying now: 1 messages" in said
    wait_until(lambda: delivered_to(chain, "q0@slow.example"), timeout=30, what="q0 delivered after retry")
    wait_until(lambda: counts(chain) == {("slow.example", "deferred"): 2}, timeout=30, what="two left")


def test_bounce_returns_mail_on_two_mtas_with_dsns_and_admin_bounce_events(
        chain: Any, three: dict[str, str]) -> None:
    said = ok(chain, "queue", "bounce", "--domain", "slow.example", "--reason", "e2e cleanup")
    assert "returned to the sender: 2 recipients of 2 messages" in said
    assert "2 DSNs queued" in said
    dsns = wait_until(lambda: [tx for tx in delivered_to(chain, SENDER) if b"e2e cleanup" in tx.data],
                      timeout=30, what="the two DSNs at the receiver")
    assert len(dsns) == 2
    assert {tx.mail_from for tx in dsns} == {"<>"}
    assert all(b"Returned by the MTA's administrator: e2e cleanup" in tx.data for tx in dsns)
    bounced = events(chain, "--type", "AdminBounce")
    assert sorted(e["recipient"] for e in bounced) == ["q1@slow.example", "q2@slow.example"]
    assert len({e["mta"] for e in bounced}) == 2
    assert {e["reason"] for e in bounced} == {"e2e cleanup"}
    wait_until(lambda: counts(chain) == {}, timeout=30, what="an empty queue")


def test_suspend_holds_mail_on_every_mta_across_a_restart_and_resume_delivers_it(
        chain: Any, three: dict[str, str]) -> None:
    said = ok(chain, "queue", "suspend", "--domain", "held.example")
    assert "suspended domain held.example on 3 MTAs" in said
    for i, ip in enumerate(three.values()):
        send(chain, ip, f"h{i}@held.example")
    wait_until(lambda: counts(chain) == {("held.example", "suspended"): 3}, timeout=30, interval=1,
               what="three held messages")
    listed = ok(chain, "queue", "ls")
    assert "suspended: domain held.example" in listed
    assert "(every MTA)" in listed
    first_ip = next(iter(three.values()))
    kill_relay(first_ip)  # its container restarts on the same volume
    time.sleep(3)
    wait_ready(chain, 3)
    wait_until(lambda: counts(chain) == {("held.example", "suspended"): 3}, timeout=60, interval=1,
               what="still three held messages after the restart")
    assert not any(delivered_to(chain, f"h{i}@held.example") for i in range(3))
    said = ok(chain, "queue", "resume", "--domain", "held.example")
    assert "3 messages due now" in said
    wait_until(lambda: all(delivered_to(chain, f"h{i}@held.example") for i in range(3)), timeout=30,
               what="the three held messages delivered")
    assert events(chain, "--recipient", "h0@held.example", "--type", "Bounce,Expiration,AdminBounce") == []


def _kubeconfig_for(chain: Any, tmp_path: Path, name: str, verbs: dict[str, str]) -> Path:
    """A ServiceAccount whose Role grants ``verbs`` per resource, as a kubeconfig with its token."""
    ns = chain.namespace
    chain.kubectl("create", "serviceaccount", name)
    rules = [{"apiGroups": ["", "mta-operator.io"], "resources": [resource], "verbs": verb.split(",")}
             for resource, verb in verbs.items()]
    chain.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                 "metadata": {"name": name, "namespace": ns}, "rules": rules},
                {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                 "metadata": {"name": name, "namespace": ns},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                 "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}]})
    token = chain.kubectl("create", "token", name).stdout.strip()
    config = json.loads(chain.kube.kubectl("config", "view", "--raw", "-o", "json").stdout)
    config["users"] = [{"name": name, "user": {"token": token}}]
    for context in config["contexts"]:
        context["context"]["user"] = name
    kubeconfig = tmp_path / f"{name}.kubeconfig"
    kubeconfig.write_text(json.dumps(config))
    return kubeconfig


def test_kubectl_mta_queue_needs_the_users_own_rights(chain: Any, three: dict[str, str],
                                                      tmp_path: Path) -> None:
    """Read on the CRs, the Secret and the pods is not enough: the pod proxy is refused by the API
    server; get on pods/proxy lets a viewer look, and only create lets anyone act."""
    reader = _kubeconfig_for(chain, tmp_path, "queue-reader",
                             {"clusters": "get,list", "secrets": "get", "pods": "get,list"})
    refused = kubectl_mta(chain, "queue", "ls", kubeconfig=reader)
    assert refused.returncode == 1
    assert "HTTP 403" in refused.stderr
    viewer = _kubeconfig_for(chain, tmp_path, "queue-viewer", {"clusters": "get,list", "secrets": "get",
                                                               "pods": "get,list", "pods/proxy": "get"})
    assert kubectl_mta(chain, "queue", "ls", kubeconfig=viewer).returncode == 0
    acting = kubectl_mta(chain, "queue", "retry", "--all", kubeconfig=viewer)
    assert acting.returncode == 1
    assert "HTTP 403" in acting.stderr
