"""Delivery events on the test bed: webhooks declared on the Cluster, posted by the MTA pods to a real HTTPS
receiver that verifies every request with the ``standardwebhooks`` package; events surviving a receiver
outage while an MTA is killed and its pod replaced; ``kubectl mta messages`` asking every MTA through the
API server's pod proxy, for a message that went through two MTAs.

The tests share one chain (module fixture) and run in file order."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
import trustme
from durability import kill_relay, wait_ready
from e2ekit import CLUSTER, HOSTNAME, figure, kubectl_mta, message
from mta_operator import naming
from support.waiting import wait_until
from support.webhook_receiver import WebhookReceiver
from testbed import podrunner

pytestmark = pytest.mark.testbed
SECRET = "whsec_" + base64.b64encode(b"e2e-webhook-key-" * 2).decode()
SENDER = "billing@example.com"


@dataclass
class Hooks:
    everything: WebhookReceiver  # every event of every credential
    outcomes: WebhookReceiver  # Delivery, Bounce, TransientFailure of "billing" only
    others: WebhookReceiver  # another credential's: gets nothing here


@pytest.fixture(scope="module")
def hooks(chain: Any) -> Iterator[Hooks]:
    """Three receivers, their CA trusted by the MTA pods (as an image would carry it), declared on the
    Cluster; the MTAs roll once (the watcher follows the webhooks' Secret)."""
    ca = trustme.CA()
    trust = Path(chain.kube.testbed.dir) / podrunner.TRUST_DIR / f"{chain.namespace}-hooks.pem"
    trust.write_bytes(ca.cert_pem.bytes())
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    with WebhookReceiver(SECRET, server_tls) as everything, WebhookReceiver(SECRET, server_tls) as outcomes, \
            WebhookReceiver(SECRET, server_tls) as others:
        chain.apply({"apiVersion": "v1", "kind": "Secret",
                     "metadata": {"name": "mta-webhook", "namespace": chain.namespace},
                     "stringData": {"secret": SECRET}})
        before = set(chain.ready_pods())
        chain.kubectl("patch", "mtacluster", CLUSTER, "--type=merge", "-p", json.dumps({"spec": {
            "queue": {"minRetryInterval": "1s", "maxRetryInterval": "2s"},
            "events": {"webhooks": [
                {"name": "everything", "url": everything.url, "secretRef": {"name": "mta-webhook"}},
                {"name": "outcomes", "url": outcomes.url, "secretRef": {"name": "mta-webhook"},
                 "types": ["Delivery", "Bounce", "TransientFailure"], "credentials": ["billing"]},
                {"name": "others", "url": others.url, "secretRef": {"name": "mta-webhook"},
                 "credentials": ["newsletter"]}]}}}))
        chain.kubectl("rollout", "status", f"statefulset/{naming.mta(CLUSTER)}", "--timeout=150s",
                      timeout=160)
        wait_until(lambda: chain.ready_pods() and all(chain.config_in_force(p) for p in chain.ready_pods())
                   and set(chain.ready_pods()) == before, timeout=90, interval=0.5,
                   what="the MTA rolled with the webhooks in force")
        wait_until(lambda: _condition(chain, "WebhooksReady").get("reason") == "WebhooksDelivering",
                   timeout=90, what="WebhooksReady=True")
        try:
            yield Hooks(everything, outcomes, others)
        finally:
            trust.unlink(missing_ok=True)


def _condition(chain: Any, type_: str) -> dict[str, Any]:
    conds = chain.get("mtacluster", CLUSTER).get("status", {}).get("conditions", [])
    return next((c for c in conds if c["type"] == type_), {})


async def _send(ip: str, port: int, tls: ssl.SSLContext, password: str, rcpts: list[str],
                data: bytes) -> None:
    smtp = aiosmtplib.SMTP(hostname=ip, port=port, start_tls=False, timeout=15)
    await smtp.connect()
    try:
        await smtp.starttls(server_hostname=HOSTNAME, tls_context=tls)
        await smtp.login("billing", password)
        await smtp.sendmail(SENDER, rcpts, data)
    finally:
        smtp.close()


def send(chain: Any, ip: str, rcpts: list[str], token: str | None = None) -> str:
    """One message from billing to ``rcpts`` through the MTA at ``ip``; its token (in its Message-ID)."""
    token, data = message(SENDER, rcpts[0], token)
    asyncio.run(_send(ip, chain.port(587), chain.tls, chain.connection("billing")["password"], rcpts, data))
    return token


def of(events: list[dict[str, Any]], token: str) -> list[dict[str, Any]]:
    return [e for e in events if e["message_id"] == f"<{token}@e2e.test>"]


def kinds(events: list[dict[str, Any]], recipient: str) -> list[str]:
    return [e["type"] for e in events if e["recipient"] == recipient]


def test_one_message_to_three_recipients_gives_the_events_each_webhook_asked_for(chain: Any,
                                                                                 hooks: Hooks) -> None:
    ok, no_user, later = "ok@example.net", "nouser@example.net", "later@example.net"
    rx = chain.receiver.receiver
    rx.script(f"rcpt:{no_user}", "550 5.1.1 <nouser@example.net>: Recipient address rejected: User unknown")
    rx.script(f"rcpt:{later}", "451 4.2.0 Mailbox busy, try again later", times=2)
    (ip,) = chain.ready_pods().values()
    started = time.monotonic()
    token = send(chain, ip, [ok, no_user, later])
    wait_until(lambda: kinds(of(hooks.outcomes.events(), token), later)[-1:] == ["Delivery"], timeout=60,
               interval=0.2, what="later@ delivered after two deferrals, at the webhook")
    figure("events: submission to the last outcome at the webhook (s)", round(time.monotonic() - started, 1))
    wait_until(lambda: len(of(hooks.everything.events(), token)) >= 8, timeout=20, what="every event")
    time.sleep(2)  # an event sent twice or filtered wrongly would be there by now
    got = of(hooks.outcomes.events(), token)
    assert kinds(got, ok) == ["Delivery"]
    assert kinds(got, no_user) == ["Bounce"]
    assert kinds(got, later) == ["TransientFailure", "TransientFailure", "Delivery"]
    (bounce,) = [e for e in got if e["type"] == "Bounce"]
    assert (bounce["bounce_kind"], bounce["bounce_classification"]) == ("hard", "InvalidRecipient")
    assert bounce["response"]["enhanced_code"] == {"class": 5, "subject": 1, "detail": 1}
    assert [e["num_attempts"] for e in got if e["recipient"] == later] == [1, 2, 3]
    for event in got:
        assert (event["credential"], event["cluster"], event["sender"]) == ("billing", CLUSTER, SENDER)
        assert event["mta"] in chain.ready_pods()
        assert event["peer_address"]["addr"] == "127.0.0.1"
        assert event["tls_protocol_version"].startswith("TLSv1")  # the smarthost requires STARTTLS
    every = of(hooks.everything.events(), token)
    assert sorted(kinds(every, ok)) == ["Delivery", "Reception"]
    assert kinds(every, later) == ["Reception", "TransientFailure", "TransientFailure", "Delivery"]
    assert of(hooks.others.events(), token) == []
    for hook in (hooks.everything, hooks.outcomes):
        assert hook.unverified == 0
        assert max(hook.copies().values()) == 1


def test_receiver_down_while_the_mta_is_killed_and_replaced_loses_no_event(chain: Any, hooks: Hooks) -> None:
    hook = hooks.everything
    hook.down()
    (ip,) = chain.ready_pods().values()
    tokens = [send(chain, ip, [f"outage{i}@example.net"]) for i in range(10)]
    wait_until(lambda: {t for t in tokens if any(t.encode() in tx.data for tx in chain.receiver.transactions)}
               == set(tokens), timeout=60, what="the 10 messages delivered")
    time.sleep(1.5)  # the MTA tried the receiver and failed by now
    (pod,) = chain.ready_pods()  # before the kill: the pod turns not ready once its relay is gone
    kill_relay(ip)
    uid = chain.get("pod", pod)["metadata"]["uid"]
    chain.kubectl("delete", "pod", pod, "--wait=false")
    wait_until(lambda: pod in chain.ready_pods() and chain.get("pod", pod)["metadata"]["uid"] != uid,
               timeout=120, interval=0.5, what="the pod replaced and ready")
    started = time.monotonic()
    hook.up()
    want = {f"<{t}@e2e.test>" for t in tokens}
    wait_until(lambda: sum(e["message_id"] in want for e in hook.events()) == 20, timeout=120, interval=0.5,
               what="20 events (Reception and Delivery of each) after the receiver came back")
    figure("events: receiver back to the last held event received (s)", round(time.monotonic() - started, 1))
    time.sleep(2)
    mine = [e for e in hook.events() if e["message_id"] in want]
    assert sorted(e["type"] for e in mine) == ["Delivery"] * 10 + ["Reception"] * 10
    # a batch sent again (its answer lost with the killed MTA) has the same webhook-id and events
    assert all(len(variants) == 1 for variants in hook.batches_by_id().values())
    assert hook.unverified == 0


def test_kubectl_mta_messages_shows_the_path_of_a_message_through_two_mtas(chain: Any, hooks: Hooks) -> None:
    chain.scale(2)
    pods = wait_ready(chain, 2)
    leaving = naming.pod(CLUSTER, 1)
    recipient = "two-hops@example.net"
    chain.receiver.receiver.script(f"rcpt:{recipient}", "451 4.2.0 Mailbox busy", times=1000)
    token = send(chain, pods[leaving], [recipient])
    wait_until(lambda: "TransientFailure" in kinds(of(hooks.everything.events(), token), recipient),
               timeout=30, what="the first deferral on the MTA that will leave")
    chain.kubectl("scale", f"mtacluster/{CLUSTER}", "--replicas=1")
    wait_until(lambda: chain.get(f"statefulset/{naming.mta(CLUSTER)}", "")["spec"]["replicas"] == 1,
               timeout=90, interval=0.5, what="the hand-off done and the StatefulSet shrunk")
    stayed = naming.pod(CLUSTER, 0)
    wait_until(lambda: any(e["type"] == "TransientFailure" and e["mta"] == stayed
                           for e in of(hooks.everything.events(), token)),
               timeout=30, what="a deferral on the MTA that took the message over")
    chain.receiver.receiver.unscript(f"rcpt:{recipient}")  # the next hop takes it from now on
    wait_until(lambda: kinds(of(hooks.everything.events(), token), recipient)[-1:] == ["Delivery"],
               timeout=60, what="delivered by the MTA that stayed")
    # Its events moved with its mail: once its pod is gone, the one MTA left answers for the whole path (a
    # pod still terminating, its relay stopped, would be listed as unanswered).
    wait_until(lambda: leaving not in {p["metadata"]["name"] for p in chain.list("pods")}, timeout=60,
               interval=0.5, what="the pod of the MTA that left gone")
    shown = kubectl_mta(chain, "messages", "--recipient", recipient)
    assert shown.returncode == 0, shown.stderr
    lines = [line for line in shown.stdout.splitlines() if line.startswith("  ")]
    assert lines, shown.stdout
    assert "Reception" in lines[0]
    assert f"on {leaving}" in lines[0]
    assert any("TransientFailure" in line and f"on {leaving}" in line for line in lines)
    assert "Delivery" in lines[-1]
    assert f"on {naming.pod(CLUSTER, 0)}" in lines[-1]
    as_json = json.loads(kubectl_mta(chain, "messages", "--recipient", recipient, "-o", "json").stdout)
    assert {e["mta"] for e in as_json["events"]} == {leaving, naming.pod(CLUSTER, 0)}
    assert as_json["unanswered"] == {}
    typed = json.loads(kubectl_mta(chain, "messages", "--message-id", f"{token}@e2e.test", "--type",
                                   "Delivery", "-o", "json").stdout)
    assert [e["type"] for e in typed["events"]] == ["Delivery"]
    bad = kubectl_mta(chain, "messages", "--type", "Delivered")
    assert bad.returncode == 1
    assert "--type 'Delivered'" in bad.stderr


def test_kubectl_mta_messages_needs_the_users_own_rights(chain: Any, tmp_path: Path) -> None:
    """Someone who may read the admin Secret but not proxy to the pods gets the API server's refusal."""
    ns = chain.namespace
    chain.kubectl("create", "serviceaccount", "reader")
    chain.kubectl("create", "role", "reader", "--verb=get,list",
                  "--resource=clusters.mta-operator.io,secrets,pods")
    chain.kubectl("create", "rolebinding", "reader", "--role=reader", f"--serviceaccount={ns}:reader")
    token = chain.kubectl("create", "token", "reader").stdout.strip()
    config = json.loads(chain.kube.kubectl("config", "view", "--raw", "-o", "json").stdout)
    config["users"] = [{"name": "reader", "user": {"token": token}}]
    for context in config["contexts"]:
        context["context"]["user"] = "reader"
    kubeconfig = tmp_path / "reader.kubeconfig"
    kubeconfig.write_text(json.dumps(config))
    refused = kubectl_mta(chain, "messages", "--recipient", "ok@example.net", kubeconfig=kubeconfig)
    assert refused.returncode == 1
    assert "HTTP 403" in refused.stderr
