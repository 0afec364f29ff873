"""What the delivery process does for every message, made cheaper and held to the plain version: the
quoted MAIL/RCPT addresses (cached), dot-stuffing (skipped when no line starts with "."), the pipelined
exchange's reply timeout (a timer, not ``asyncio.wait_for``), the channel's batched notices, metric
children looked up once, and a single destination delivered without a task of its own."""

from __future__ import annotations

import asyncio
import json
import re
import socket

import pytest
from aiosmtplib import SMTPReadTimeoutError
from aiosmtplib.email import quote_address
from hypothesis import given
from hypothesis import strategies as st
from mta_relay.delivery import channel as channel_module
from mta_relay.delivery.channel import Channel
from mta_relay.delivery.client import HopPolicy, TlsMode, _dot_stuffed, _quoted
from mta_relay.delivery.metrics import LabelledCounter
from mta_relay.delivery.outcome import RecipientOutcome
from mta_relay.delivery.pipelining import Replies
from mta_relay.delivery.pool import ConnectionPool
from mta_relay.delivery.router import Deliverer, Route, Routes, hold_route
from prometheus_client import CollectorRegistry, Counter

pytestmark = pytest.mark.unit

_PIECES = st.sampled_from([b"\r\n", b".", b"..", b"a", b" ", b"\n", b"\r"])


@given(st.lists(_PIECES, max_size=40).map(b"".join))
def test_dot_stuffing_is_the_substitution_on_any_message(message: bytes) -> None:
    assert _dot_stuffed(message) == re.sub(rb"(?m)^\.", b"..", message)


@pytest.mark.parametrize("address", ["app@example.com", "", "Bob <bob@example.net>", " x@example.org "])
def test_a_quoted_address_is_aiosmtplib_s_and_repeats_come_from_the_cache(address: str) -> None:
    assert _quoted(address, "ascii") == quote_address(address).encode("ascii")
    hits = _quoted.cache_info().hits
    assert _quoted(address, "ascii") == quote_address(address).encode("ascii")
    assert _quoted.cache_info().hits == hits + 1


def test_a_refused_address_raises_every_time_and_is_not_cached() -> None:
    for _ in range(2):
        with pytest.raises(ValueError, match="not permitted"):
            _quoted("a b@example.com", "ascii")  # a space would end the address on the command line
    with pytest.raises(UnicodeEncodeError):
        _quoted("jörg@example.com", "ascii")
    assert _quoted("jörg@example.com", "utf-8") == "<jörg@example.com>".encode()


class _Owner(asyncio.Protocol):
    pass


async def test_a_reply_that_does_not_come_times_out_and_one_that_does_is_read() -> None:
    replies = Replies(_Owner(), timeout=0.05)
    with pytest.raises(SMTPReadTimeoutError):
        await replies.next()
    asyncio.get_running_loop().call_later(0.01, replies.data_received, b"250 2.0.0 Ok\r\n")
    reply = await replies.next()
    assert (reply.code, reply.message) == (250, "2.0.0 Ok")
    untimed = Replies(_Owner(), timeout=None)
    untimed.data_received(b"354 go on\r\n")
    assert (await untimed.next()).code == 354


async def test_a_cancelled_wait_for_a_reply_leaves_no_timer_behind() -> None:
    replies = Replies(_Owner(), timeout=0.05)
    waiting = asyncio.create_task(replies.next())
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.sleep(0.08)  # past the timeout: nothing fires into the next wait
    replies.data_received(b"250 Ok\r\n")
    assert (await replies.next()).code == 250


async def _channel_pair() -> tuple[Channel, socket.socket]:
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    return await Channel.open(ours), theirs


async def _writes(sock: socket.socket, wait: float, lines: int | None = None) -> list[bytes]:
    """What arrived on ``sock`` within ``wait`` (or once ``lines`` lines came), one item per read."""
    loop = asyncio.get_running_loop()
    chunks: list[bytes] = []
    deadline = loop.time() + wait
    while (left := deadline - loop.time()) > 0 and (lines is None or len(_ops(chunks)) < lines):
        try:
            async with asyncio.timeout(left):
                chunks.append(await loop.sock_recv(sock, 1 << 16))
        except TimeoutError:
            break
    return chunks


def _ops(chunks: list[bytes]) -> list[str]:
    return [json.loads(line)["op"] for line in b"".join(chunks).splitlines()]


async def test_batched_notices_share_one_write_within_the_batch_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(channel_module, "BATCH_SECONDS", 0.3)
    channel, theirs = await _channel_pair()
    try:
        for slot in range(5):
            channel.send_batched({"op": "released", "qid": f"q{slot}", "slot": slot})
        assert _ops(await _writes(theirs, 0.1)) == []  # not written at once
        chunks = await _writes(theirs, 5, lines=5)
        assert len(chunks) == 1
        assert _ops(chunks) == ["released"] * 5
    finally:
        channel.close()
        theirs.close()


async def test_a_plain_send_takes_the_waiting_notices_along_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(channel_module, "BATCH_SECONDS", 30.0)  # only the plain send can write them
    channel, theirs = await _channel_pair()
    try:
        channel.send_batched({"op": "released", "qid": "q1", "slot": 1})
        channel.send({"op": "ready"})
        channel.send_batched({"op": "released", "qid": "q2", "slot": 2})
        assert _ops(await _writes(theirs, 5, lines=3)) == ["released", "ready", "released"]
        channel.send_batched({"op": "released", "qid": "q3", "slot": 3})
        assert _ops(await _writes(theirs, 0.1)) == []  # a fresh notice waits for its own timer again
    finally:
        channel.close()
        theirs.close()


async def test_notices_from_a_thread_and_flush_write_what_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(channel_module, "BATCH_SECONDS", 30.0)
    channel, theirs = await _channel_pair()
    try:
        await asyncio.to_thread(channel.send_threadsafe, {"op": "released", "qid": "q1", "slot": 1},
                                batched=True)
        await asyncio.sleep(0.01)  # the loop has run the call from the thread
        assert _ops(await _writes(theirs, 0.05)) == []
        channel.flush()
        assert _ops(await _writes(theirs, 5, lines=1)) == ["released"]
    finally:
        channel.close()
        theirs.close()


def test_a_labelled_counter_counts_as_a_plain_one_and_forgets_removed_children() -> None:
    registry = CollectorRegistry()
    plain = Counter("plain_results", "r", ["result", "reply_class"], registry=registry)
    cached = LabelledCounter("cached_results", "r", ["result", "reply_class"], registry=registry)
    for counter in (plain, cached):
        for values in [("delivered", "2xx"), ("deferred", "4xx"), ("delivered", "2xx")]:
            counter.labels(*values).inc()
        counter.labels(result="failed", reply_class="5xx").inc()
    assert cached.labels("delivered", "2xx") is cached.labels("delivered", "2xx")

    def samples(name: str) -> list[tuple[dict[str, str], float]]:
        return sorted(((s.labels, s.value) for m in registry.collect() if m.name == name
                       for s in m.samples if s.name.endswith("_total")), key=repr)
    assert samples("cached_results") == samples("plain_results")
    cached.remove("delivered", "2xx")
    cached.labels("delivered", "2xx").inc()  # a new child, registered again: counts from zero
    assert registry.get_sample_value("cached_results_total",
                                     {"result": "delivered", "reply_class": "2xx"}) == 1
    cached.clear()
    cached.labels("deferred", "4xx").inc()
    assert registry.get_sample_value("cached_results_total",
                                     {"result": "deferred", "reply_class": "4xx"}) == 1


async def test_one_destination_is_delivered_in_the_caller_s_task_several_concurrently() -> None:
    seen: list[tuple[str, asyncio.Task[object] | None]] = []

    class Watching(Deliverer):
        async def _deliver_group(self, route: Route, destination: str, sender: str, rcpts: list[str],
                                 message: bytes) -> list[RecipientOutcome]:
            seen.append((destination, asyncio.current_task()))
            return await super()._deliver_group(route, destination, sender, rcpts, message)

    policy = HopPolicy(helo_name="mta.example.org", port=25, tls=TlsMode.NONE)
    routes = Routes(hold_route("default", "4.3.2 held", policy),
                    by_recipient={"example.org": hold_route("org", "4.3.2 org held", policy)})
    deliverer = Watching(routes, ConnectionPool())
    one = await deliverer.deliver("a@example.com", ["b@example.net", "c@example.net"], b"x\r\n")
    assert [(o.recipient, o.code, o.text) for o in one] == [("b@example.net", 451, "4.3.2 held"),
                                                            ("c@example.net", 451, "4.3.2 held")]
    assert seen == [("default", asyncio.current_task())]
    seen.clear()
    two = await deliverer.deliver("a@example.com", ["d@example.org", "b@example.net"], b"x\r\n")
    assert [(o.recipient, o.text) for o in two] == [("d@example.org", "4.3.2 org held"),
                                                    ("b@example.net", "4.3.2 held")]
    assert sorted(d for d, _ in seen) == ["default", "org"]
    assert all(task is not asyncio.current_task() for _, task in seen)  # gathered, each in its own task
