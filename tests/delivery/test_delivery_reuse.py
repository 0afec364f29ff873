"""Connection reuse per destination against a real receiving server on loopback: no NOOP for a
connection used moments ago, a NOOP for one idle longer, and a dead reused connection replaced at once
without ever sending a message twice."""

from __future__ import annotations

from deliverykit import message
from mta_relay.delivery.client import HopPolicy, TlsMode
from mta_relay.delivery.outcome import Result
from mta_relay.delivery.pool import PROBE_AFTER_IDLE, ConnectionPool
from mta_relay.delivery.router import Deliverer, smarthost_route
from support.smtp_receiver import HANG_UP, SmtpReceiver


class Clock:
    """A monotonic clock the test advances by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def deliverer(port: int, pool: ConnectionPool) -> Deliverer:
    policy = HopPolicy(helo_name="mta.example.org", port=port, tls=TlsMode.NONE, connect_timeout=5,
                       command_timeout=5)
    return Deliverer(smarthost_route("127.0.0.1", policy), pool)


async def send(d: Deliverer) -> Result:
    [outcome] = await d.deliver("a@example.com", ["b@example.net"], message())
    return outcome.result


async def test_messages_in_quick_succession_share_a_connection_without_noop() -> None:
    async with SmtpReceiver() as rx:
        pool = ConnectionPool(per_destination=2, idle_timeout=30)
        d = deliverer(rx.port, pool)
        results = [await send(d) for _ in range(5)]
        await pool.close()
    assert results == [Result.DELIVERED] * 5
    assert len(rx.transactions) == 5
    [connection] = rx.connections
    assert connection.commands("MAIL FROM") == 5
    assert connection.commands("NOOP") == 0
    assert pool.reused == 4


async def test_connection_idle_past_the_threshold_is_probed_with_noop() -> None:
    clock = Clock()
    async with SmtpReceiver() as rx:
        pool = ConnectionPool(per_destination=2, idle_timeout=30, clock=clock)
        d = deliverer(rx.port, pool)
        assert await send(d) is Result.DELIVERED
        clock.now += PROBE_AFTER_IDLE * 0.9
        assert await send(d) is Result.DELIVERED  # used moments ago: no probe
        noops_before = rx.connections[0].commands("NOOP")
        clock.now += PROBE_AFTER_IDLE * 1.1
        assert await send(d) is Result.DELIVERED
        await pool.close()
    [connection] = rx.connections
    assert noops_before == 0
    assert connection.commands("NOOP") == 1
    assert pool.reused == 2


async def test_connection_dropped_while_idle_is_replaced_at_once_and_sends_once() -> None:
    async with SmtpReceiver() as rx:
        pool = ConnectionPool(per_destination=2, idle_timeout=30)
        d = deliverer(rx.port, pool)
        assert await send(d) is Result.DELIVERED
        # The next hop closes the idle socket; the pool hands the connection out before the client
        # has read the close, so MAIL FROM is what finds it dead.
        rx.drop_connections()
        second = await send(d)
        await pool.close()
    assert second is Result.DELIVERED
    assert len(rx.transactions) == 2
    assert [c.messages() for c in rx.connections] == [1, 1]
    assert pool.reused == 1


async def test_reused_connection_hung_up_at_mail_from_is_retried_on_a_fresh_one() -> None:
    async with SmtpReceiver() as rx:
        pool = ConnectionPool(per_destination=2, idle_timeout=30)
        d = deliverer(rx.port, pool)
        assert await send(d) is Result.DELIVERED
        rx.script("mail", HANG_UP)
        second = await send(d)
        rx.script("mail", "421 4.4.2 too many messages on this connection")
        third = await send(d)
        await pool.close()
    assert (second, third) == (Result.DELIVERED, Result.DELIVERED)
    assert len(rx.transactions) == 3
    # MAIL FROM went out twice on each connection that was given up, the message once on each.
    assert [c.commands("MAIL FROM") for c in rx.connections] == [2, 2, 1]
    assert [c.messages() for c in rx.connections] == [1, 1, 1]


async def test_fresh_connection_hung_up_at_mail_from_defers_without_retry() -> None:
    async with SmtpReceiver() as rx:
        rx.script("mail", HANG_UP)
        pool = ConnectionPool(per_destination=2, idle_timeout=30)
        [outcome] = await deliverer(rx.port, pool).deliver("a@example.com", ["b@example.net"], message())
        await pool.close()
    assert outcome.result is Result.DEFERRED
    assert outcome.text.startswith("4.4.2")
    assert len(rx.connections) == 1
    assert rx.transactions == []


async def test_reused_connection_lost_after_the_final_dot_defers_without_retry() -> None:
    async with SmtpReceiver() as rx:
        pool = ConnectionPool(per_destination=2, idle_timeout=30)
        d = deliverer(rx.port, pool)
        assert await send(d) is Result.DELIVERED
        rx.script("data", HANG_UP)  # the next hop has the whole message but never answers
        [outcome] = await d.deliver("a@example.com", ["b@example.net"], message())
        await pool.close()
    assert outcome.result is Result.DEFERRED
    assert outcome.text.startswith("4.4.2")
    # No second copy went out at once: the retry is the queue's, after backoff (the duplicate window).
    [connection] = rx.connections
    assert connection.commands("MAIL FROM") == 2
    assert connection.commands("DATA") == 2
    assert pool.reused == 1
