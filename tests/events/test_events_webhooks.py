"""The webhook sender against a real HTTPS receiver on loopback (a test CA's certificate) that checks
every request with the ``standardwebhooks`` package: signed batches, retries under the same webhook-id,
filters, the outbox limit, expiry, TLS verification."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trustme
from eventkit import Receiver, event, new_secret, until
from mta_relay.events.record import EventType
from mta_relay.events.store import EventStore, EventWriter
from mta_relay.events.webhooks import (
    WebhookSender,
    WebhookTarget,
    decode_payload,
    decode_secret,
    encode_payload,
    sign,
    validate_url,
)
from prometheus_client import CollectorRegistry
from standardwebhooks.webhooks import Webhook
from support.tls import make_ca, write_ca_file


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return make_ca()


@pytest.fixture
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    return context


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    return write_ca_file(ca, tmp_path / "ca.pem")


@dataclass
class Bed:
    path: Path
    registry: CollectorRegistry
    sender: WebhookSender
    writer: EventWriter

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def bed(tmp_path: Path) -> AsyncIterator[Bed]:
    path = tmp_path / "events" / "events.db"
    registry = CollectorRegistry()
    sender = WebhookSender(path, registry, max_batch=100, backoff_min=0.05, backoff_max=0.2,
                           poll_seconds=0.05)
    writer = EventWriter(path, log_events=False, max_pending=1000, on_commit=sender.nudge)
    yield Bed(path, registry, sender, writer)
    await sender.stop()
    writer.close()


async def _configure(bed: Bed, *targets: WebhookTarget) -> None:
    bed.writer.configure([t.filter for t in targets])
    await bed.sender.apply(targets)


@pytest.fixture
async def receiver(server_tls: ssl.SSLContext) -> AsyncIterator[Receiver]:
    r = Receiver(new_secret(), server_tls)
    yield r
    await r.stop()


async def test_batches_arrive_signed_in_order(bed: Bed, receiver: Receiver, ca_file: Path) -> None:
    await receiver.start()
    await _configure(bed, WebhookTarget("hook", receiver.url, receiver.secret, ca_file=ca_file))
    sent = [event() for _ in range(250)]
    for e in sent:
        bed.writer.emit(e)
    await until(lambda: len(receiver.delivered()) == 250, what="250 events at the receiver")
    assert not receiver.refused
    assert [e for _, e in receiver.delivered()] == sent
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == len(receiver.requests) >= 3
    assert all(r.headers["content-type"] == "application/json" for r in receiver.requests)
    assert all(len(decode_payload(r.body)) <= 100 for r in receiver.requests)
    await until(lambda: bed.metric("mta_webhook_events_pending", webhook="hook") == 0, what="pending 0")
    assert bed.metric("mta_webhook_events_delivered_total", webhook="hook") == 250
    successes = bed.metric("mta_webhook_requests_total", webhook="hook", result="success")
    assert successes == len(receiver.requests)


async def test_a_receiver_down_for_a_while_gets_everything_once(bed: Bed, receiver: Receiver,
                                                                ca_file: Path) -> None:
    await _configure(bed, WebhookTarget("hook", receiver.url, receiver.secret, ca_file=ca_file))
    sent = [event() for _ in range(150)]
    for e in sent[:100]:
        bed.writer.emit(e)
    await until(lambda: bed.metric("mta_webhook_requests_total", webhook="hook",
                                   result="connection_error") >= 3, what="failed attempts")
    receiver.statuses = [503, 500]  # up, but failing twice: the same batch is resent
    await receiver.start()
    for e in sent[100:]:
        bed.writer.emit(e)
    await until(lambda: len(receiver.delivered()) == 150, what="150 events at the receiver")
    assert not receiver.refused
    assert [e for _, e in receiver.delivered()] == sent  # each once, in order
    first, second, third = receiver.requests[:3]
    assert (first.status, second.status, third.status) == (503, 500, 200)
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == third.headers["webhook-id"]
    assert first.body == second.body == third.body
    assert bed.metric("mta_webhook_requests_total", webhook="hook", result="http_error") == 2


async def test_a_batch_resent_after_a_restart_keeps_its_id(tmp_path: Path, receiver: Receiver,
                                                           ca_file: Path) -> None:
    path = tmp_path / "events.db"
    target = WebhookTarget("hook", receiver.url, receiver.secret, ca_file=ca_file)
    store = EventStore(path)
    store.insert([event() for _ in range(5)], [target.filter])
    store.close()
    receiver.statuses = [500]
    await receiver.start()
    sender = WebhookSender(path, CollectorRegistry(), backoff_min=30, poll_seconds=0.05)
    await sender.apply([target])
    await until(lambda: len(receiver.requests) == 1, what="the first attempt")
    await sender.stop()  # the MTA restarts: the batch waits in the store with its due time
    store = EventStore(path)
    waiting = store.next_batch("hook", 100)
    assert waiting is not None
    assert waiting.attempts == 1
    store.failed(waiting, 0.0)  # due now: the test does not wait out the backoff
    store.close()
    sender = WebhookSender(path, CollectorRegistry(), poll_seconds=0.05)
    await sender.apply([target])
    await until(lambda: len(receiver.delivered()) == 5, what="the resent batch")
    await sender.stop()
    assert receiver.requests[0].headers["webhook-id"] == receiver.requests[1].headers["webhook-id"]
    assert receiver.requests[0].body == receiver.requests[1].body


async def test_filters_by_type_and_credential(bed: Bed, server_tls: ssl.SSLContext, ca_file: Path) -> None:
    bounces, batch_only = Receiver(new_secret(), server_tls), Receiver(new_secret(), server_tls)
    await bounces.start()
    await batch_only.start()
    try:
        await _configure(bed,
                         WebhookTarget("bounces", bounces.url, bounces.secret, ca_file=ca_file,
                                       types=frozenset({"Bounce", "Expiration"})),
                         WebhookTarget("batch", batch_only.url, batch_only.secret, ca_file=ca_file,
                                       credentials=frozenset({"batch"})))
        sent = [event(), event(EventType.BOUNCE), event(credential="batch"),
                event(EventType.EXPIRATION, credential="batch"), event(EventType.RECEPTION)]
        for e in sent:
            bed.writer.emit(e)
        await until(lambda: len(bounces.delivered()) == 2 and len(batch_only.delivered()) == 2,
                    what="the matching events")
        assert [e for _, e in bounces.delivered()] == [sent[1], sent[3]]
        assert [e for _, e in batch_only.delivered()] == [sent[2], sent[3]]
    finally:
        await bounces.stop()
        await batch_only.stop()


async def test_the_outbox_limit_drops_the_oldest_and_counts(tmp_path: Path, receiver: Receiver,
                                                            ca_file: Path) -> None:
    path = tmp_path / "events.db"
    registry = CollectorRegistry()
    sender = WebhookSender(path, registry, backoff_min=0.05, backoff_max=0.1, poll_seconds=0.05)
    writer = EventWriter(path, log_events=False, max_pending=20, on_commit=sender.nudge)
    target = WebhookTarget("hook", receiver.url, receiver.secret, ca_file=ca_file)
    writer.configure([target.filter])
    await sender.apply([target])  # the receiver is down
    sent = [event() for _ in range(50)]
    for e in sent:
        writer.emit(e)
    assert writer.flush(10)
    dropped = {"webhook": "hook", "reason": "outbox_full"}
    await until(lambda: registry.get_sample_value("mta_webhook_events_dropped_total", dropped) == 30,
                what="30 counted as dropped")
    assert registry.get_sample_value("mta_webhook_events_pending", {"webhook": "hook"}) == 20
    await receiver.start()
    await until(lambda: len(receiver.delivered()) == 20, what="the newest 20")
    assert [e for _, e in receiver.delivered()] == sent[30:]
    await sender.stop()
    writer.close()


async def test_events_past_give_up_after_are_dropped(tmp_path: Path, receiver: Receiver,
                                                     ca_file: Path) -> None:
    path = tmp_path / "events.db"
    target = WebhookTarget("hook", receiver.url, receiver.secret, ca_file=ca_file)
    store = EventStore(path)
    store.insert([event(timestamp=time.time() - 3600) for _ in range(3)] + [event()], [target.filter])
    store.close()
    registry = CollectorRegistry()
    sender = WebhookSender(path, registry, max_batch=2, backoff_min=0.05, backoff_max=0.1, poll_seconds=0.05,
                           give_up_after=60)
    await sender.apply([target])  # down: the old three expire after one failed attempt
    expired = {"webhook": "hook", "reason": "expired"}
    await until(lambda: registry.get_sample_value("mta_webhook_events_dropped_total", expired) == 3,
                what="3 expired")
    await receiver.start()
    await until(lambda: len(receiver.delivered()) == 1, what="the fresh event")
    await sender.stop()


async def test_an_untrusted_certificate_is_refused(bed: Bed, receiver: Receiver) -> None:
    await receiver.start()
    await _configure(bed, WebhookTarget("hook", receiver.url, receiver.secret))  # system CAs only
    bed.writer.emit(event())
    await until(lambda: bed.metric("mta_webhook_requests_total", webhook="hook", result="tls_error") >= 2,
                what="TLS failures")
    assert receiver.requests == []
    assert bed.metric("mta_webhook_events_pending", webhook="hook") == 1
    assert bed.metric("mta_webhook_events_delivered_total", webhook="hook") == 0


async def test_a_certificate_for_another_name_is_refused(bed: Bed, ca: trustme.CA, ca_file: Path) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("other.example").configure_cert(context)
    receiver = Receiver(new_secret(), context)
    await receiver.start()
    try:
        await _configure(bed, WebhookTarget("hook", receiver.url, receiver.secret, ca_file=ca_file))
        bed.writer.emit(event())
        await until(lambda: bed.metric("mta_webhook_requests_total", webhook="hook", result="tls_error") >= 1,
                    what="a TLS failure")
        assert receiver.requests == []
    finally:
        await receiver.stop()


async def test_plain_http_only_when_the_target_allows_it(bed: Bed) -> None:
    receiver = Receiver(new_secret())
    await receiver.start()
    try:
        target = WebhookTarget("plain", receiver.url, receiver.secret)
        await _configure(bed, target)
        bed.writer.emit(event())
        assert bed.writer.flush(10)
        await asyncio.sleep(0.3)  # several poll intervals
        assert receiver.requests == []  # refused: no loop runs for it
        await _configure(bed, replace(target, allow_insecure_http=True))
        await until(lambda: len(receiver.delivered()) == 1, what="the event over plain HTTP")
    finally:
        await receiver.stop()


async def test_a_removed_webhook_forgets_its_outbox(bed: Bed, receiver: Receiver, ca_file: Path) -> None:
    target = WebhookTarget("hook", receiver.url, receiver.secret, ca_file=ca_file)
    await _configure(bed, target)
    bed.writer.emit(event())
    assert bed.writer.flush(10)
    await _configure(bed)
    store = EventStore(bed.path)
    assert store.webhooks() == []
    assert store.count() == 1  # the event stays in the store
    store.close()


# --- the format (pure) ------------------------------------------------------------------------------
@pytest.mark.unit
def test_the_signature_is_what_standardwebhooks_verifies() -> None:
    secret = new_secret()
    body = encode_payload([event()], time.time())
    now = int(time.time())
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(now),
               "webhook-signature": sign(decode_secret(secret), "msg_1", now, body)}
    assert Webhook(secret).verify(body, headers)["type"] == "mta.events"
    assert headers["webhook-signature"] == Webhook(secret).sign("msg_1", datetime.fromtimestamp(now, UTC),
                                                                 body.decode())


@pytest.mark.unit
def test_the_payload_round_trips_and_is_stable() -> None:
    events = [event(), event(EventType.BOUNCE)]
    body = encode_payload(events, 1_700_000_000.5)
    assert body == encode_payload(events, 1_700_000_000.5)
    assert json.loads(body)["timestamp"] == "2023-11-14T22:13:20.500Z"
    assert decode_payload(body) == events
    with pytest.raises(ValueError, match=r"mta\.events"):
        decode_payload(b'{"type": "other"}')


@pytest.mark.unit
@pytest.mark.parametrize(("secret", "problem"), [
    ("whsec_" + base64.b64encode(b"k" * 32).decode(), None),
    (base64.b64encode(b"k" * 24).decode().rstrip("="), None),  # no prefix, no padding: accepted
    ("whsec_" + base64.b64encode(b"k" * 8).decode(), "8 bytes"),
    ("whsec_not base64!", "not base64"),
])
def test_secrets(secret: str, problem: str | None) -> None:
    if problem is None:
        assert len(decode_secret(secret)) >= 24
    else:
        with pytest.raises(ValueError, match=problem) as caught:
            decode_secret(secret)
        assert secret.removeprefix("whsec_") not in str(caught.value)


@pytest.mark.unit
@pytest.mark.parametrize(("url", "insecure", "problem"), [
    ("https://hooks.example.com/mta?x=1", False, None),
    ("https://10.0.0.7:8443/hook", False, None),
    ("http://hooks.example.com/", False, "plain http"),
    ("http://hooks.example.com/", True, None),
    ("ftp://hooks.example.com/", False, "scheme"),
    ("hooks.example.com/hook", False, "scheme"),
    ("https://user:pw@hooks.example.com/", False, "credentials"),
    ("https:///hook", False, "no host"),
    ("https://hooks.example.com:99999/", False, "port"),
    ("https://hooks.example.com/#frag", False, "fragment"),
    ("https://hooks.example.com/a b", False, "whitespace"),
    ("https://hooks.example.com/" + "a" * 3000, False, "longer"),
])
def test_validate_url(url: str, insecure: bool, problem: str | None) -> None:
    found = validate_url(url, insecure)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found


@pytest.mark.unit
def test_the_target_never_shows_its_secret() -> None:
    secret = new_secret()
    assert secret not in repr(WebhookTarget("hook", "https://h.example/", secret))

