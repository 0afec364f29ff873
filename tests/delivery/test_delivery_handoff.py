"""Scale-down hand-off between two real relays (mta_relay.handoff, mta_relay.delivery.handoff): relay A is
marked leaving and hands its queue to relay B, which delivers it to the real test SMTP receiver. The two
share one certificate, as the MTAs of a cluster do, and one peer token."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import signal
import smtplib
import ssl
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import dkim
import pytest
import yaml
from deliverykit import free_port, message, rsa_key
from mta_relay import handoff
from mta_relay.spool import Envelope, decode_entry, encode_entry, new_queue_id, slot_files
from relayproc import PASSWORD, USERNAME, RelayProcess
from support.smtp_receiver import SmtpReceiver, Transaction
from support.tls import make_ca, write_ca_file, write_server_cert
from support.webhook_receiver import WebhookReceiver

TOKEN = "peer-token-" + "z" * 32
A_NAME, B_NAME = "c1-mta-1", "c1-mta-0"
DKIM_RECORD = b"sel._domainkey.example.com."


class Pair:
    """Relay A (the one that leaves) and relay B (the one that stays), one cluster certificate."""

    def __init__(self, tmp_path: Path, *, shared_cert: bool = True) -> None:
        self.receiver_port = smarthost_port = free_port()  # nothing listens there until a test says so
        pem, self.dkim_txt = rsa_key()
        self.a = self._relay(tmp_path / "a", smarthost_port, pem, A_NAME)
        self.b = self._relay(tmp_path / "b", smarthost_port, pem, B_NAME)
        if shared_cert:
            for name in ("tls.crt", "tls.key"):  # one certificate for the cluster's MTAs
                shutil.copyfile(tmp_path / "a" / "tls" / name, tmp_path / "b" / "tls" / name)
            self.b.ca, self.b.client_tls = self.a.ca, self.a.client_tls
        for relay in (self.a, self.b):
            self.set_handoff(relay, leaving=[])

    @staticmethod
    def _relay(workdir: Path, smarthost_port: int, pem: bytes, pod: str) -> RelayProcess:
        workdir.mkdir()
        relay = RelayProcess(workdir, smarthost_port, dkim_pem=pem, env={"POD_NAME": pod},
                             queue={"path": str(workdir / "spool"), "minRetryIntervalSeconds": 1,
                                    "maxRetryIntervalSeconds": 2})
        (relay.dir / "peer-token").write_text(TOKEN + "\n")
        return relay

    def set_handoff(self, relay: RelayProcess, leaving: list[str]) -> None:
        """Rewrite the relay's settings as the operator would: the relay reloads them in place."""
        path = relay.dir / "relay.yaml"
        settings = yaml.safe_load(path.read_text())
        settings["handoff"] = {"tokenFile": "peer-token", "leaving": leaving,
                               "peers": [{"name": B_NAME, "url": f"https://127.0.0.1:{self.b.http_port}"}]}
        path.write_text(yaml.safe_dump(settings))

    def stop(self) -> None:
        for relay in (self.a, self.b):
            if relay.proc is not None and relay.proc.poll() is None:
                os.kill(relay.proc.pid, signal.SIGCONT)  # a stopped relay cannot die of SIGKILL otherwise
            relay.stop()


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    both = Pair(tmp_path)
    try:
        yield both
    finally:
        both.stop()


# --- helpers -------------------------------------------------------------------------------------
def submit_many(relay: RelayProcess, messages: list[tuple[list[str], bytes]]) -> None:
    """Many messages in one SMTP session; each 250 means durable in the relay's spool."""
    with smtplib.SMTP("127.0.0.1", relay.smtp_port, timeout=30) as smtp:
        smtp.starttls(context=relay.client_tls)
        smtp.login(USERNAME, PASSWORD)
        for rcpts, data in messages:
            smtp.sendmail("app@example.com", rcpts, data)


def spooled(relay: RelayProcess) -> dict[str, Envelope]:
    """The complete entries in a relay's spool by queue id (read with the spool's own decoder)."""
    found: dict[str, Envelope] = {}
    copies: Counter[str] = Counter()
    for path in slot_files(relay.spool / "slots"):
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # a slot the relay deleted while we looked holds nothing
            continue
        if data:
            envelope = decode_entry(data).envelope
            found[envelope.queue_id] = envelope
            copies[envelope.queue_id] += 1
    assert not [qid for qid, n in copies.items() if n > 1], "an entry is in the spool twice"
    return found


def call(relay: RelayProcess, method: str, path: str, *, authorization: str | None = None,
         body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"https://127.0.0.1:{relay.http_port}{path}", data=body, method=method,
                                     headers={**(headers or {}),
                                              **({"Authorization": authorization} if authorization else {})})
    try:
        with urllib.request.urlopen(request, timeout=30, context=relay.client_tls) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def queue_status(relay: RelayProcess) -> dict[str, Any]:
    status, body = call(relay, "GET", handoff.QUEUE_PATH, authorization=f"Bearer {TOKEN}")
    assert status == 200
    return body


def metric(relay: RelayProcess, name: str) -> float:
    url = f"https://127.0.0.1:{relay.http_port}/metrics"
    text = urllib.request.urlopen(url, timeout=10, context=relay.client_tls).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


async def until(condition, within: float = 60.0, what: str = "condition") -> Any:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await asyncio.to_thread(condition)
        except (OSError, ValueError, AssertionError) as error:  # a file mid-write, a relay restarting
            last = error
        else:
            if last:
                return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def the_queue(count: int) -> list[tuple[list[str], bytes]]:
    """``count`` messages, every tenth to three recipients."""
    out = []
    for i in range(count):
        rcpts = [f"r{i}-{k}@example.net" for k in range(3 if i % 10 == 0 else 1)]
        out.append((rcpts, message(subject=f"m{i}", to=rcpts[0])))
    return out


def deliveries(transactions: list[Transaction]) -> Counter[tuple[str, str]]:
    """(subject, recipient) pairs the receiver accepted, with how often."""
    seen: Counter[tuple[str, str]] = Counter()
    for tx in transactions:
        subject = re.search(rb"^Subject: (.*)$", tx.data, re.MULTILINE)
        assert subject is not None
        for rcpt in tx.rcpt_tos:
            seen[(subject.group(1).decode().strip(), rcpt)] += 1
    return seen


def expected(messages: list[tuple[list[str], bytes]]) -> Counter[tuple[str, str]]:
    return Counter((re.search(rb"Subject: (\S+)", data).group(1).decode(), rcpt)  # type: ignore[union-attr]
                   for rcpts, data in messages for rcpt in rcpts)


async def start_both(both: Pair) -> None:
    await asyncio.to_thread(both.b.start)
    await asyncio.to_thread(both.a.start)
    await until(lambda: queue_status(both.a) and queue_status(both.b), what="both relays serving")


# --- the tests -----------------------------------------------------------------------------------
async def test_a_leaving_relay_hands_its_whole_queue_over_and_each_message_is_delivered_once(
        pair: Pair) -> None:
    port = pair.receiver_port
    await start_both(pair)
    # One message half delivered before the outage: its second recipient is deferred.
    first = SmtpReceiver(port=port)
    first.script("rcpt:later@example.net", "451 4.2.0 try later", times=1000)
    await first.start()
    split = (["now@example.net", "later@example.net"], message(subject="split", to="now@example.net"))
    await asyncio.to_thread(submit_many, pair.a, [split])
    await first.wait_for(1, within=20)
    await until(lambda: list((pair.a.spool / "outcomes").glob("*.out")), what="the split outcome on A")
    await first.stop()  # the next hop is down from here on

    queue = the_queue(120)
    await asyncio.to_thread(submit_many, pair.a, queue)
    before = await until(lambda: len(spooled(pair.a)) == 121 and spooled(pair.a), what="121 entries on A")
    await asyncio.sleep(1.5)  # A tries them and defers them: they go over with a retry record

    pair.set_handoff(pair.a, leaving=[A_NAME])
    pair.set_handoff(pair.b, leaving=[A_NAME])
    await until(lambda: call(pair.a, "GET", "/readyz")[0] == 503, what="A not ready")
    _, ready = await asyncio.to_thread(call, pair.a, "GET", "/readyz")
    assert ready["not_leaving"] is False
    assert (await asyncio.to_thread(call, pair.b, "GET", "/readyz"))[0] == 200
    # The count goes up once an entry's removal is done, a moment after the spool stops listing it.
    final = await until(lambda: (s := queue_status(pair.a))["depth"] == 0 and s["handedOff"] == 121 and s,
                        what="A's queue empty and every entry counted as handed off")
    assert final["leaving"] is True
    after = await asyncio.to_thread(spooled, pair.b)
    assert set(after) == set(before)
    assert {q: e.received_at for q, e in after.items()} == {q: e.received_at for q, e in before.items()}
    [split_qid] = [qid for qid, e in before.items() if "later@example.net" in e.rcpts]
    assert after[split_qid].rcpts == ("later@example.net",)  # the delivered recipient stayed delivered
    assert all(after[qid].rcpts == before[qid].rcpts for qid in after if qid != split_qid)
    assert spooled(pair.a) == {}
    assert await asyncio.to_thread(metric, pair.b, "mta_handoff_received_total") == 121

    async with SmtpReceiver(port=port) as second:
        want = expected(queue) + Counter({("split", "later@example.net"): 1})
        await until(lambda: deliveries(second.transactions) == want, within=60, what="every message once")
        await asyncio.sleep(1.0)  # anything sent twice would arrive now
        got = deliveries(second.transactions)
        transactions = list(second.transactions)
    assert got == want
    assert deliveries(first.transactions) == Counter({("split", "now@example.net"): 1})
    for tx in transactions:  # signed once, at delivery, by B: never signed before the hand-off too
        assert tx.data.count(b"DKIM-Signature:") == 1
        assert dkim.verify(tx.data, dnsfunc=lambda name, timeout=5: {DKIM_RECORD: pair.dkim_txt}.get(name))
    await until(lambda: spooled(pair.b) == {}, what="B's spool empty after delivery")
    for relay in (pair.a, pair.b):  # log lines carry queue ids and counts, never the token or a body
        log = relay.log.read_text()
        assert TOKEN not in log
        assert "Subject: m1" not in log
    assert '"event": "handed_off"' in pair.a.log.read_text()


async def test_leaving_no_longer_named_resumes_delivery_on_the_same_relay(pair: Pair) -> None:
    await start_both(pair)
    pair.b.stop()  # no peer to take anything: the queue stays on A
    await asyncio.to_thread(submit_many, pair.a, the_queue(5))
    pair.set_handoff(pair.a, leaving=[A_NAME])
    await until(lambda: queue_status(pair.a)["leaving"] and queue_status(pair.a)["handoffFailures"] > 0,
                what="A trying to hand off to a peer that is down")
    assert queue_status(pair.a)["depth"] == 5
    pair.set_handoff(pair.a, leaving=[])
    await until(lambda: call(pair.a, "GET", "/readyz")[0] == 200, what="A ready again")
    async with SmtpReceiver(port=pair.receiver_port) as rx:
        await until(lambda: deliveries(rx.transactions) == expected(the_queue(5)), what="A delivering")
        await until(lambda: queue_status(pair.a)["depth"] == 0, what="A's queue empty")


async def test_kill_9_of_the_leaving_relay_mid_hand_off_loses_nothing(pair: Pair) -> None:
    await start_both(pair)
    queue = the_queue(150)
    await asyncio.to_thread(submit_many, pair.a, queue)
    before = await until(lambda: len(spooled(pair.a)) == 150 and spooled(pair.a), what="150 on A")
    pair.set_handoff(pair.a, leaving=[A_NAME])
    # Under way: B stored some, and A had some of them answered 200 (and removed them).
    await until(lambda: len(pair.b.spool_entries()) >= 5 and len(spooled(pair.a)) < 150, within=30,
                what="the hand-off under way")
    assert pair.b.proc is not None
    os.kill(pair.b.proc.pid, signal.SIGSTOP)  # B holds requests unanswered: some stored, not yet 200
    try:
        await asyncio.sleep(0.5)
        pair.a.kill()
    finally:
        os.kill(pair.b.proc.pid, signal.SIGCONT)
    left_on_a = len(spooled(pair.a))
    assert 0 < left_on_a < 150  # killed mid hand-off
    await asyncio.to_thread(pair.a.start)  # still named leaving: it carries on
    await until(lambda: queue_status(pair.a)["depth"] == 0, what="A's queue empty after its restart")
    after = await asyncio.to_thread(spooled, pair.b)
    assert set(after) == set(before)  # each once: spooled() fails on a second copy
    duplicates = await asyncio.to_thread(metric, pair.b, 'mta_handoff_received_total{result="duplicate"}')
    # The duplicates are entries B stored whose 200 A had not recorded when it died; B keeps one copy.
    print(f"hand-offs sent again after A's kill -9 and answered duplicate by B: {duplicates:.0f}")
    async with SmtpReceiver(port=pair.receiver_port) as rx:
        await until(lambda: deliveries(rx.transactions) == expected(queue), within=60, what="all delivered")
        await asyncio.sleep(1.0)
        assert deliveries(rx.transactions) == expected(queue)


async def test_kill_9_of_the_peer_mid_hand_off_loses_nothing(pair: Pair) -> None:
    await start_both(pair)
    queue = the_queue(150)
    await asyncio.to_thread(submit_many, pair.a, queue)
    before = await until(lambda: len(spooled(pair.a)) == 150 and spooled(pair.a), what="150 on A")
    pair.set_handoff(pair.a, leaving=[A_NAME])
    await until(lambda: len(pair.b.spool_entries()) >= 5, within=30, what="the hand-off under way")
    assert pair.b.proc is not None
    os.kill(pair.b.proc.pid, signal.SIGSTOP)  # freeze it mid hand-off, then kill it there
    pair.b.kill()
    # Read A's depth only once A has failed to reach B and the requests then in flight have settled (a
    # reply B sent just before it was frozen may still have been on its way to A); then wait for a later
    # round of failures.
    await until(lambda: queue_status(pair.a)["handoffFailures"] > 0, what="A failing to reach B")
    await asyncio.sleep(1.0)
    status = queue_status(pair.a)
    on_a = status["depth"]
    assert 0 < on_a < 150
    await until(lambda: queue_status(pair.a)["handoffFailures"] > status["handoffFailures"],
                what="A failing again")
    assert queue_status(pair.a)["depth"] == on_a  # nothing removed while no peer answers
    await asyncio.to_thread(pair.b.start)
    await until(lambda: queue_status(pair.a)["depth"] == 0, what="A's queue empty after B came back")
    after = await asyncio.to_thread(spooled, pair.b)
    assert set(after) == set(before)
    async with SmtpReceiver(port=pair.receiver_port) as rx:
        await until(lambda: deliveries(rx.transactions) == expected(queue), within=60, what="all delivered")
        await asyncio.sleep(1.0)
        assert deliveries(rx.transactions) == expected(queue)


async def test_the_internal_endpoints_take_only_the_peer_token_and_a_sound_entry(pair: Pair) -> None:
    await asyncio.to_thread(pair.b.start)
    b = pair.b
    basic = "Basic " + base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
    envelope = Envelope(new_queue_id(), "app@example.com",
                        ("x@example.net",), USERNAME, "127.0.0.1", time.time() - 3600, "smtp", False, 0)
    data = message(subject="direct")
    envelope = Envelope(**{**vars(envelope), "size": len(data)})
    headers, body = handoff.encode(decode_entry(encode_entry(envelope, data)), ["x@example.net"], 2,
                                   time.time() + 600)
    for auth in (None, "Bearer wrong-token", basic, f"Basic {TOKEN}"):
        assert (await asyncio.to_thread(call, b, "GET", handoff.QUEUE_PATH, authorization=auth))[0] == 401
        assert (await asyncio.to_thread(call, b, "POST", handoff.HANDOFF_PATH, authorization=auth,
                                        body=body, headers=headers))[0] == 401
    inject = json.dumps({"envelope_sender": "app@example.com", "recipients": ["x@example.net"],
                         "content": "Subject: hi\r\nFrom: app@example.com\r\n\r\nhi\r\n"}).encode()
    assert (await asyncio.to_thread(call, b, "POST", "/api/inject/v1", authorization=f"Bearer {TOKEN}",
                                    body=inject, headers={"Content-Type": "application/json"}))[0] == 401
    token = f"Bearer {TOKEN}"
    garbage = b"MTASPOOL 1 2 3\nsecret-looking body bytes"
    status, answer = await asyncio.to_thread(call, b, "POST", handoff.HANDOFF_PATH, authorization=token,
                                             body=garbage, headers=headers)
    assert status == 400
    assert "spool entry" in answer["error"]
    assert "secret" not in json.dumps(answer)
    tampered = body.replace(b"Subject: direct", b"Subject: change")
    status, answer = await asyncio.to_thread(call, b, "POST", handoff.HANDOFF_PATH, authorization=token,
                                             body=tampered, headers=headers)
    assert (status, answer["error"]) == (400, "body is not a spool entry: checksum mismatch")
    # The spool cannot write: 503, never 200.
    (b.spool / "slots").rename(b.spool / "slots.away")
    try:
        status, _ = await asyncio.to_thread(call, b, "POST", handoff.HANDOFF_PATH, authorization=token,
                                            body=body, headers=headers)
    finally:
        (b.spool / "slots.away").rename(b.spool / "slots")
    assert status == 503
    assert spooled(b) == {}
    # Taken once; the same queue id again is answered 200 without a second copy.
    for result in ("stored", "duplicate"):
        status, answer = await asyncio.to_thread(call, b, "POST", handoff.HANDOFF_PATH, authorization=token,
                                                 body=body, headers=headers)
        assert (status, answer) == (200, {"queueId": envelope.queue_id, "result": result})
    held = spooled(b)
    assert list(held) == [envelope.queue_id]
    assert held[envelope.queue_id].received_at == envelope.received_at
    assert queue_status(b) == {"depth": 1, "leaving": False, "handedOff": 0, "handoffFailures": 0,
                               "pendingEvents": 0, "webhooks": {}}
    log = b.log.read_text()
    assert TOKEN not in log
    assert "secret-looking" not in log
    assert "Subject: direct" not in log


async def test_a_peer_without_the_cluster_certificate_gets_nothing(tmp_path: Path) -> None:
    """B's certificate is valid for 127.0.0.1 but is not the cluster's: the pin refuses it."""
    both = Pair(tmp_path, shared_cert=False)
    try:
        await start_both(both)
        await asyncio.to_thread(submit_many, both.a, the_queue(3))
        both.set_handoff(both.a, leaving=[A_NAME])
        await until(lambda: queue_status(both.a)["handoffFailures"] >= 2, what="A refusing B's certificate")
        assert queue_status(both.a)["depth"] == 3
        assert queue_status(both.b)["depth"] == 0
        assert "ServerFingerprintMismatch" in both.a.log.read_text()
    finally:
        both.stop()


def deferred_events(relay: RelayProcess) -> set[str]:
    """Queue ids with a TransientFailure event in the relay's log (a JSON line per event)."""
    lines = (json.loads(line) for line in relay.log.read_text().splitlines() if '"mail_event"' in line)
    return {e["id"] for e in lines if e["type"] == "TransientFailure"}


async def test_events_go_with_the_mail_and_the_webhook_outbox_moves_to_the_peer(
        pair: Pair, tmp_path: Path) -> None:
    """A holds a deferred message and webhook events its receiver never took; after the hand-off B holds
    both: the message's whole path is queryable on B, and B sends every event, none lost."""
    ca = make_ca()
    cert, key = write_server_cert(ca, tmp_path / "hook-tls", ("127.0.0.1",))
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    ca_file = write_ca_file(ca, tmp_path / "hook-ca.pem")
    secret = "whsec_" + base64.b64encode(b"s" * 32).decode()
    with WebhookReceiver(secret, server_tls) as hook:
        hook.down()
        for relay in (pair.a, pair.b):
            (relay.dir / "hook-secret").write_text(secret)
            (relay.dir / "admin-token").write_text(TOKEN + "-admin")
            path = relay.dir / "relay.yaml"
            settings = yaml.safe_load(path.read_text())
            hooks = [{"name": "app-events", "url": hook.url, "secretFile": "hook-secret",
                      "caFile": str(ca_file)}]
            settings.update(cluster="c1", adminTokenFile="admin-token", events={"webhooks": hooks})
            path.write_text(yaml.safe_dump(settings))
        await start_both(pair)
        await asyncio.to_thread(submit_many, pair.a, the_queue(3))  # the next hop is down: deferred
        await until(lambda: len(deferred_events(pair.a)) >= 3, what="A deferred the three")
        pair.set_handoff(pair.a, leaving=[A_NAME])
        pair.set_handoff(pair.b, leaving=[A_NAME])
        final = await until(lambda: (s := queue_status(pair.a))["depth"] == 0 and s["pendingEvents"] == 0
                            and s, what="A holds neither mail nor events")
        assert final["handedOff"] == 3
        assert queue_status(pair.b)["pendingEvents"] >= 6  # A's Reception and TransientFailure events
        async with SmtpReceiver(port=pair.receiver_port) as rx:
            await until(lambda: len(rx.transactions) == 3, what="B delivers the three")
            hook.up()
            # one event per recipient: the first message has three
            await until(lambda: sum(e["type"] == "Delivery" for e in hook.events()) == 5, what="5 Deliveries")
            await asyncio.sleep(1.0)
        status, body = call(pair.b, "GET", "/admin/v1/messages?recipient=r1-0@example.net",
                            headers={"X-MTA-Admin-Token": TOKEN + "-admin"})
    assert status == 200
    path = [(e["type"], e["mta"]) for e in body["events"]]
    assert path[0] == ("Reception", A_NAME)
    assert ("TransientFailure", A_NAME) in path
    assert path[-1] == ("Delivery", B_NAME)
    by_type = Counter(e["type"] for e in hook.events())
    assert by_type["Reception"] == 5
    assert by_type["Delivery"] == 5
    assert by_type["TransientFailure"] >= 5
    assert max(hook.copies().values()) == 1
