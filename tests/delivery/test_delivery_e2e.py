"""End to end on loopback: the real ``mta-relay`` process, submission over SMTP and HTTP, delivery to a
real receiving SMTP server (the smarthost)."""

from __future__ import annotations

import asyncio
import base64
import random
import re
import smtplib
import ssl
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import dkim
import pytest
from deliverykit import message, rsa_key
from mta_relay.spool import Spool
from relayproc import PASSWORD, USERNAME, RelayProcess
from support.smtp_receiver import SmtpReceiver
from support.tls import make_ca, write_ca_file

TRACE = re.compile(rb"^(DKIM-Signature|Received):.*\r\n([ \t].*\r\n)*", re.IGNORECASE)


def strip_trace(data: bytes) -> bytes:
    """The message without the header fields the relay adds in front (trace and DKIM)."""
    while (match := TRACE.match(data)) is not None:
        data = data[match.end():]
    return data


@pytest.fixture
async def receiver() -> AsyncIterator[SmtpReceiver]:
    async with SmtpReceiver() as rx:
        yield rx


async def settle(done: Callable[[], bool], within: float) -> None:
    """Give the system up to ``within`` seconds to get there; the assertions afterwards say if it did not."""
    for _ in range(int(within / 0.1)):
        if done():
            return
        await asyncio.sleep(0.1)


async def started(relay: RelayProcess) -> RelayProcess:
    return await asyncio.to_thread(relay.start)


async def test_submitted_message_arrives_intact_and_dkim_verifies(tmp_path: Path,
                                                                  receiver: SmtpReceiver) -> None:
    pem, txt = rsa_key()
    relay = await started(RelayProcess(tmp_path, receiver.port, dkim_pem=pem))
    try:
        original = message(body=b"Hello,\r\n.a line with a leading dot\r\n\r\nBye\r\n")
        await asyncio.to_thread(relay.submit, "app@example.com", ["bob@example.net"], original)
        [tx] = await receiver.wait_for(1)
    finally:
        relay.stop()
    assert tx.mail_from == "app@example.com"
    assert tx.rcpt_tos == ("bob@example.net",)
    assert strip_trace(tx.data) == original
    assert tx.data.startswith(b"DKIM-Signature:")
    assert dkim.verify(tx.data, dnsfunc=lambda name, timeout=5: txt if name == b"sel._domainkey.example.com."
                       else None)


def basic_auth() -> str:
    return "Basic " + base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()


SMUGGLED = b"\r\n.\r\nMAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nspoofed\r\n"


async def test_outbound_smuggling_over_smtp_and_http_is_one_transaction(tmp_path: Path,
                                                                        receiver: SmtpReceiver) -> None:
    relay = await started(RelayProcess(tmp_path, receiver.port))
    try:
        # SMTP: the client dot-stuffs the "." line; the relay must stuff it again on the way out.
        await asyncio.to_thread(relay.submit, "app@example.com", ["bob@example.net"],
                                message(subject="via smtp", body=b"before" + SMUGGLED + b"after\r\n"))
        # SMTP with a bare LF before the dot: the front door refuses it outright (521), nothing is queued.
        with pytest.raises((smtplib.SMTPException, ConnectionError)):
            await asyncio.to_thread(relay.submit, "app@example.com", ["bob@example.net"],
                                    message(subject="bare lf", body=b"before\n.\r\nMAIL FROM:<e@x>\r\n"))
        # HTTP: raw content with a bare LF before the dot line.
        content = message(subject="via http", body=b"before\n.\r\nMAIL FROM:<evil@example.com>\r\n"
                                                   b"RCPT TO:<victim@example.org>\r\nDATA\r\nafter\r\n")
        async with aiohttp.ClientSession() as http:
            response = await http.post(f"https://127.0.0.1:{relay.http_port}/api/inject/v1",
                                       headers={"Authorization": basic_auth()}, ssl=relay.client_tls,
                                       json={"envelope_sender": "app@example.com",
                                             "recipients": ["bob@example.net"], "content": content.decode()})
            assert response.status == 200, await response.text()
        txs = await receiver.wait_for(2)
        await asyncio.sleep(0.5)  # a smuggled third transaction would show up by now
    finally:
        relay.stop()
    assert len(receiver.transactions) == 2
    assert receiver.mail_commands() == 2
    assert {t.mail_from for t in txs} == {"app@example.com"}
    assert all(t.rcpt_tos == ("bob@example.net",) for t in txs)
    for tx in txs:
        assert b"MAIL FROM:<evil@example.com>\r\n" in tx.data  # delivered as body text
        assert tx.data.endswith(b"after\r\n")


async def test_truncated_spool_entry_is_quarantined_at_start(tmp_path: Path, receiver: SmtpReceiver) -> None:
    relay = RelayProcess(tmp_path, receiver.port)
    spool = Spool(relay.spool)
    spool.recover()
    good = await spool.put(mail_from="app@example.com", rcpts=["bob@example.net"], credential=USERNAME,
                           client_ip="127.0.0.1", source="smtp", smtputf8=False,
                           message=message(subject="good"))
    torn = await spool.put(mail_from="app@example.com", rcpts=["bob@example.net"], credential=USERNAME,
                           client_ip="127.0.0.1", source="smtp", smtputf8=False,
                           message=message(subject="torn", body=b"x" * 4000))
    path = spool.path(torn.queue_id)
    path.write_bytes(path.read_bytes()[:2500])
    await started(relay)
    try:
        [tx] = await receiver.wait_for(1)
        await asyncio.sleep(0.5)
    finally:
        relay.stop()
    assert b"Subject: good" in tx.data
    assert len(receiver.transactions) == 1
    assert (spool.quarantine_dir / f"{torn.queue_id}.msg").exists()
    assert relay.spool_entries() == []
    assert good.queue_id not in {p.stem for p in spool.quarantine_dir.iterdir()}


class Load:
    """Submits messages with unique subjects from threads until stopped; remembers which got a 250."""

    def __init__(self, relay: RelayProcess, threads: int = 3) -> None:
        self.relay = relay
        self.acked: set[str] = set()
        self.errors = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]
        self._lock = threading.Lock()

    def _run(self, worker: int) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            token = f"w{worker}-{n}"
            try:
                self.relay.submit("app@example.com", ["bob@example.net"], body_for(token))
            except (OSError, smtplib.SMTPException):
                with self._lock:
                    self.errors += 1
                time.sleep(0.05)
                continue
            with self._lock:
                self.acked.add(token)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)


def body_for(token: str) -> bytes:
    return message(subject=token, body=f"token {token}\r\n".encode() + b"0123456789abcdef\r\n" * 200)


def tokens_delivered(receiver: SmtpReceiver) -> Counter[str]:
    seen: Counter[str] = Counter()
    for tx in receiver.transactions:
        token = re.search(rb"^Subject: (\S+)\r\n", tx.data, re.MULTILINE)
        assert token is not None
        assert strip_trace(tx.data) == body_for(token.group(1).decode())  # never in part
        seen[token.group(1).decode()] += 1
    return seen


async def test_kill_9_under_load_loses_nothing_acknowledged(tmp_path: Path, receiver: SmtpReceiver,
                                                            record_property) -> None:
    relay = await started(RelayProcess(tmp_path, receiver.port))
    rng = random.Random()
    kills = 0
    try:
        with Load(relay) as load:
            for _ in range(10):
                await asyncio.sleep(rng.uniform(0.3, 1.2))
                relay.kill()
                kills += 1
                await started(relay)
            await asyncio.sleep(0.5)
        acked = set(load.acked)
        await settle(lambda: acked <= set(tokens_delivered(receiver)), within=60)
        await asyncio.sleep(1.0)
        delivered = tokens_delivered(receiver)
    finally:
        relay.stop()
    duplicates = sum(count - 1 for count in delivered.values())
    record_property("acknowledged", len(acked))
    record_property("duplicates", duplicates)
    print(f"\nkill -9 x{kills}: {len(acked)} acknowledged, {len(delivered)} delivered, "
          f"{duplicates} duplicates, {load.errors} submissions cut off")
    assert kills >= 10
    assert len(acked) > 50
    assert acked - set(delivered) == set()  # every 250 was delivered at least once


async def test_sigterm_drains_and_restart_delivers_the_rest(tmp_path: Path) -> None:
    async with SmtpReceiver(data_delay=1.0) as slow:
        relay = await started(RelayProcess(tmp_path, slow.port, grace=3.0))
        try:
            tokens = [f"d{i}" for i in range(60)]
            await asyncio.gather(*(asyncio.to_thread(relay.submit, "app@example.com", ["bob@example.net"],
                                                     body_for(t)) for t in tokens))
            began = time.monotonic()
            code = await asyncio.to_thread(relay.terminate, 10)
            took = time.monotonic() - began
            first_round = len(slow.transactions)
            left = relay.spool_entries()
            await started(relay)
            await settle(lambda: set(tokens) <= set(tokens_delivered(slow)), within=30)
            delivered = tokens_delivered(slow)
        finally:
            relay.stop()
    assert code == 0
    assert took < 3.0 + 1.5
    assert first_round > 0
    assert left  # some mail was still queued at exit, and went out after the restart
    assert set(tokens) <= set(delivered)


async def test_smarthost_with_required_starttls_and_auth(tmp_path: Path) -> None:
    ca = make_ca()
    (tmp_path / "smarthost").mkdir()
    (tmp_path / "smarthost" / "username").write_text("relay-user\n")
    (tmp_path / "smarthost" / "password").write_text("smarthost-Secret-1\n")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    async with SmtpReceiver(tls=context, require_tls=True, users={"relay-user": "smarthost-Secret-1"}) as rx:
        relay = RelayProcess(
            tmp_path, rx.port,
            smarthost={"tls": "STARTTLS", "usernameFile": str(tmp_path / "smarthost" / "username"),
                       "passwordFile": str(tmp_path / "smarthost" / "password")},
            env={"SSL_CERT_FILE": str(write_ca_file(ca, tmp_path / "smarthost-ca.pem"))})
        await started(relay)
        try:
            await asyncio.to_thread(relay.submit, "app@example.com", ["bob@example.net"], message())
            [tx] = await rx.wait_for(1)
        finally:
            relay.stop()
    assert tx.tls
    assert tx.login == "relay-user"
    assert strip_trace(tx.data) == message()
    assert b"smarthost-Secret-1" not in relay.log.read_bytes()


async def test_rate_limit_through_the_relay_accepts_all_and_paces_delivery(tmp_path: Path,
                                                                          receiver: SmtpReceiver) -> None:
    period = 2.0
    relay = await started(RelayProcess(tmp_path, receiver.port,
                                       rateLimit={"messages": 10, "periodSeconds": int(period)}))
    try:
        tokens = [f"r{i}" for i in range(30)]
        await asyncio.gather(*(asyncio.to_thread(relay.submit, "app@example.com", ["bob@example.net"],
                                                 body_for(t)) for t in tokens))  # raises on any refusal
        accepted_at = time.monotonic()
        first = await receiver.wait_for(1)
        began = first[0].at
        counts = []
        for checkpoint in (0.5, 1.5, 2.5):
            await asyncio.sleep(max(0.0, began + checkpoint * period - time.monotonic()))
            counts.append(len(receiver.transactions))
        await receiver.wait_for(30, within=2 * period)
    finally:
        relay.stop()
    assert began - accepted_at < period / 2  # the first batch did not wait for the submissions
    assert counts == [10, 20, 30]
    assert set(tokens_delivered(receiver)) == set(tokens)
