"""Delivery events end to end on loopback: the real ``mta-relay`` process, a real receiving SMTP server
that accepts, refuses and defers, and real HTTPS webhook receivers that verify every request with the
``standardwebhooks`` package."""

from __future__ import annotations

import base64
import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from deliverykit import message
from relayproc import PASSWORD, USERNAME, RelayProcess
from support.receiver_thread import ThreadedReceiver
from support.tls import make_ca, write_ca_file, write_server_cert
from support.webhook_receiver import WebhookReceiver

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
OK, NO_USER, LATER = "ok@example.net", "nouser@example.net", "later@example.net"
ADMIN_TOKEN = "admin-" + "t" * 30


def wait_for(done: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if done():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {within} s: {what}")


@pytest.fixture
def hook_tls(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """The receivers' server context and the CA file the relay is told to trust."""
    ca = make_ca()
    cert, key = write_server_cert(ca, tmp_path / "hook-tls", ("127.0.0.1",))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context, write_ca_file(ca, tmp_path / "hook-ca.pem")


@pytest.fixture
def smtp_receiver() -> Iterator[ThreadedReceiver]:
    with ThreadedReceiver() as rx:
        yield rx


def relay_with_hooks(tmp_path: Path, smarthost_port: int, ca_file: Path,
                     hooks: dict[str, tuple[WebhookReceiver, dict[str, Any]]]) -> RelayProcess:
    (tmp_path / "secret").write_text(SECRET)
    (tmp_path / "admin-token").write_text(ADMIN_TOKEN)
    webhooks = [{"name": name, "url": rx.url, "secretFile": str(tmp_path / "secret"),
                 "caFile": str(ca_file), **extra} for name, (rx, extra) in hooks.items()]
    return RelayProcess(tmp_path, smarthost_port, events={"webhooks": webhooks}, cluster="main",
                        adminTokenFile=str(tmp_path / "admin-token"),
                        queue={"path": str(tmp_path / "spool"), "minRetryIntervalSeconds": 0.3,
                               "maxRetryIntervalSeconds": 0.6})


def kinds(events: list[dict[str, Any]], recipient: str) -> list[str]:
    return [e["type"] for e in events if e["recipient"] == recipient]


def test_delivery_events_reach_each_webhook_signed_and_filtered(
        tmp_path: Path, smtp_receiver: ThreadedReceiver, hook_tls: tuple[ssl.SSLContext, Path]) -> None:
    rx = smtp_receiver.receiver
    rx.script(f"rcpt:{NO_USER}", "550 5.1.1 <nouser@example.net>: Recipient address rejected: "
                                 "User unknown in virtual mailbox table")
    rx.script(f"rcpt:{LATER}", "451 4.3.0 Mailbox temporarily unavailable, try again later", times=2)
    server_tls, ca_file = hook_tls
    with WebhookReceiver(SECRET, server_tls) as everything, \
            WebhookReceiver(SECRET, server_tls) as outcomes, \
            WebhookReceiver(SECRET, server_tls) as someone_else:
        relay = relay_with_hooks(tmp_path, smtp_receiver.port, ca_file, {
            "everything": (everything, {}),
            "outcomes": (outcomes, {"types": ["Delivery", "Bounce", "TransientFailure"]}),
            "someone-else": (someone_else, {"credentials": ["billing"]})}).start()
        try:
            relay.submit("app@example.com", [OK, NO_USER, LATER], message())
            # the bounce's DSN to the sender is mail too: delivered, with its own Delivery event
            wait_for(lambda: len(outcomes.events()) == 6, 30, "6 outcome events at the webhook")
            wait_for(lambda: len(everything.events()) == 9, 10, "9 events of every type")
            time.sleep(1)  # an event sent twice, or one filtered out wrongly, would show by now
        finally:
            relay.stop()
    got = outcomes.events()
    assert kinds(got, OK) == ["Delivery"]
    assert kinds(got, NO_USER) == ["Bounce"]
    assert kinds(got, LATER) == ["TransientFailure", "TransientFailure", "Delivery"]
    (dsn,) = [e for e in got if e["recipient"] == "app@example.com"]
    assert (dsn["type"], dsn["sender"], dsn["credential"]) == ("Delivery", "", "")
    (bounce,) = [e for e in got if e["type"] == "Bounce"]
    assert (bounce["bounce_kind"], bounce["bounce_classification"]) == ("hard", "InvalidRecipient")
    assert bounce["response"]["code"] == 550
    assert bounce["response"]["enhanced_code"] == {"class": 5, "subject": 1, "detail": 1}
    deferrals = [e for e in got if e["type"] == "TransientFailure"]
    assert [e["num_attempts"] for e in deferrals] == [1, 2]
    assert all(e["bounce_kind"] == "soft" for e in deferrals)
    for event in (e for e in got if e is not dsn):
        assert (event["credential"], event["cluster"], event["message_id"]) == (USERNAME, "main",
                                                                                "<m1@example.com>")
        assert event["sender"] == "app@example.com"
        assert event["peer_address"]["addr"] == "127.0.0.1"
        assert event["created"] > 0
    assert kinds(everything.events(), OK) == ["Reception", "Delivery"]
    assert kinds(everything.events(), LATER) == ["Reception", "TransientFailure", "TransientFailure",
                                                 "Delivery"]
    assert someone_else.events() == []  # filtered by credential: nothing is this credential's
    assert everything.unverified == outcomes.unverified == 0
    assert max(outcomes.copies().values()) == 1
    # ok (with later and nouser refused), later at its third attempt, and the DSN
    assert len(rx.transactions) == 3


def admin_get(relay: RelayProcess, query: str, token: str | None = ADMIN_TOKEN) -> tuple[int, Any]:
    request = urllib.request.Request(f"https://127.0.0.1:{relay.http_port}/admin/v1/messages?{query}",
                                     headers={"X-MTA-Admin-Token": token} if token else {})
    try:
        with urllib.request.urlopen(request, context=relay.client_tls, timeout=10) as answer:  # noqa: S310
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_delivery_events_survive_a_killed_mta_while_the_receiver_is_down(
        tmp_path: Path, smtp_receiver: ThreadedReceiver, hook_tls: tuple[ssl.SSLContext, Path]) -> None:
    server_tls, ca_file = hook_tls
    with WebhookReceiver(SECRET, server_tls) as hook:
        hook.down()
        relay = relay_with_hooks(tmp_path, smtp_receiver.port, ca_file, {"app-events": (hook, {})}).start()
        try:
            for i in range(20):
                relay.submit("app@example.com", [f"user{i}@example.net"], message())
            wait_for(lambda: len(smtp_receiver.transactions) == 20, 30, "20 messages delivered")
            time.sleep(1.5)  # the sender has failed a few times by now
            relay.kill()  # SIGKILL: the outbox is all that is left of the events
            relay.start()
            hook.up()
            wait_for(lambda: len(hook.events()) == 40, 60, "40 events (20 Reception + 20 Delivery)")
            time.sleep(1)  # anything sent twice would have arrived by now
        finally:
            relay.stop()
    assert sorted(e["type"] for e in hook.events()) == ["Delivery"] * 20 + ["Reception"] * 20
    # a batch sent again (its answer lost with the killed MTA) carries the same webhook-id and events
    assert all(len(variants) == 1 for variants in hook.batches_by_id().values())
    assert hook.unverified == 0


def test_admin_api_answers_only_with_its_token_and_names_bad_parameters(
        tmp_path: Path, smtp_receiver: ThreadedReceiver, hook_tls: tuple[ssl.SSLContext, Path]) -> None:
    server_tls, ca_file = hook_tls
    with WebhookReceiver(SECRET, server_tls) as hook:
        relay = relay_with_hooks(tmp_path, smtp_receiver.port, ca_file, {"app-events": (hook, {})}).start()
        try:
            relay.submit("app@example.com", ["alice@customer.example"], message())
            relay.submit("app@example.com", ["bob@customer.example"], message())
            wait_for(lambda: len(smtp_receiver.transactions) == 2, 30, "2 messages delivered")

            def found() -> list[str]:
                status, body = admin_get(relay, "recipient=alice@customer.example")
                return [e["type"] for e in body["events"]] if status == 200 else []
            wait_for(lambda: found() == ["Reception", "Delivery"], 10, "alice's path in the store")
            assert admin_get(relay, "recipient=alice@customer.example", token=None)[0] == 401
            assert admin_get(relay, "recipient=alice@customer.example", token="wrong")[0] == 401
            assert admin_get(relay, "recipient=alice@customer.example", token=PASSWORD)[0] == 401
            status, body = admin_get(relay, "type=Delivered")
            assert status == 400
            assert "type" in body["error"]
            status, body = admin_get(relay, "since=yesterday")
            assert (status, body["error"].split(":")[0]) == (400, "since")
            status, body = admin_get(relay, "limit=0")
            assert (status, body["error"].split(":")[0]) == (400, "limit")
            status, body = admin_get(relay, "colour=blue")
            assert status == 400
            assert "colour" in body["error"]
            status, body = admin_get(relay, f"since={time.time() + 60:.0f}")
            assert (status, body["events"]) == (200, [])
        finally:
            relay.stop()
    log = relay.log.read_text()
    assert ADMIN_TOKEN not in log
    assert SECRET not in log


def metric_lines(relay: RelayProcess, name: str) -> dict[str, float]:
    with urllib.request.urlopen(f"https://127.0.0.1:{relay.http_port}/metrics",
                                context=relay.client_tls, timeout=10) as answer:
        text = answer.read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith(name)}


def test_outbox_limit_and_credential_metrics_come_from_the_settings(
        tmp_path: Path, smtp_receiver: ThreadedReceiver, hook_tls: tuple[ssl.SSLContext, Path]) -> None:
    """events.maxPendingEvents bounds a down receiver's outbox (the oldest dropped and counted) and
    events.credentialMetrics turns the per-credential series on."""
    server_tls, ca_file = hook_tls
    (tmp_path / "secret").write_text(SECRET)
    with WebhookReceiver(SECRET, server_tls) as hook:
        hook.down()
        relay = RelayProcess(tmp_path, smtp_receiver.port, events={
            "maxPendingEvents": 100, "credentialMetrics": True,
            "webhooks": [{"name": "h", "url": hook.url, "secretFile": str(tmp_path / "secret"),
                          "caFile": str(ca_file)}]}).start()
        try:
            for i in range(70):  # 140 events: a Reception and a Delivery each
                relay.submit("app@example.com", [f"r{i}@example.net"], message())
            wait_for(lambda: len(smtp_receiver.transactions) == 70, 30, "70 delivered")
            dropped = 'mta_webhook_events_dropped_total{reason="outbox_full",webhook="h"}'
            wait_for(lambda: metric_lines(relay, "mta_webhook_events_dropped_total").get(dropped, 0) >= 40,
                     30, "the oldest 40 events dropped and counted")
            pending = metric_lines(relay, "mta_webhook_events_pending")
            assert pending['mta_webhook_events_pending{webhook="h"}'] <= 100
            per_credential = metric_lines(relay, "mta_credential_delivery_events_total")
            key = 'mta_credential_delivery_events_total{credential="app",type="Delivery"}'
            assert per_credential[key] == 70
        finally:
            relay.stop()
