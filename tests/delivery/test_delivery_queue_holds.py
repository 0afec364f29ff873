"""The queue runner's suspensions and administration over a real spool and a real receiving SMTP server on
loopback: held mail is parked (never tried, never expired), handed off with the rest on scale-down, and
released by a resume; an administrator's bounce of an entry in flight or unknown is refused."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from deliverykit import message
from mta_relay.delivery.backoff import RetryPolicy
from mta_relay.delivery.client import HopPolicy, TlsMode
from mta_relay.delivery.holds import Holds
from mta_relay.delivery.metrics import DeliveryMetrics
from mta_relay.delivery.pool import ConnectionPool
from mta_relay.delivery.router import Deliverer, smarthost_route
from mta_relay.queue import InFlight, QueueRunner, QueueSettings
from mta_relay.queue_admin import Target
from mta_relay.spool import Spool
from prometheus_client import CollectorRegistry
from support.smtp_receiver import SmtpReceiver


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    spool = Spool(tmp_path / "spool")
    spool.recover()
    return spool


def runner(spool: Spool, port: int, holds: Holds, registry: CollectorRegistry,
           max_age: float = 60) -> QueueRunner:
    policy = HopPolicy(helo_name="mta.test", port=port, tls=TlsMode.NONE, connect_timeout=2,
                       command_timeout=5)
    return QueueRunner(spool, Deliverer(smarthost_route("127.0.0.1", policy), ConnectionPool()),
                       QueueSettings("mta.test", retry=RetryPolicy(first=0.05, cap=0.2, max_age=max_age)),
                       metrics=DeliveryMetrics(registry), holds=holds)


async def put(spool: Spool, run: QueueRunner, rcpts: list[str], credential: str = "app") -> str:
    env = await spool.put(mail_from="app@example.com", rcpts=rcpts, credential=credential,
                          client_ip="127.0.0.1", source="smtp", smtputf8=False, message=message())
    run.notify(env.queue_id)
    return env.queue_id


async def until(predicate: Callable[[], object], within: float = 10.0) -> None:
    end = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < end, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_held_mail_is_parked_never_expired_handed_off_and_released_by_a_resume(spool: Spool) -> None:
    holds = Holds()
    await holds.suspend(Target("domain", "held.example"), "alice", 1.0)
    registry = CollectorRegistry()
    async with SmtpReceiver() as rx:
        run = runner(spool, rx.port, holds, registry, max_age=0.3)  # held longer than the max retry age
        await run.start()
        both = await put(spool, run, ["a@held.example", "b@open.example"])
        (tx,) = await rx.wait_for(1)
        assert tx.rcpt_tos == ("b@open.example",)
        await until(lambda: run.state(both) == "suspended")
        assert registry.get_sample_value("mta_queue_messages", {"state": "suspended"}) == 1
        await asyncio.sleep(0.6)  # past the max retry age: still held, never bounced or expired
        assert run.state(both) == "suspended"
        assert registry.get_sample_value("mta_delivery_bounces_total", {"reason": "expired"}) is None
        assert run.retry_now(both) == "suspended"

        # a scale-down takes held mail too; a hand-off that stops gives it back, and it is held again
        claimed = run.claim_idle()
        assert [qid for qid, _attempts, _next in claimed] == [both]
        assert run.state(both) is None
        run.give_back(both)
        await until(lambda: run.state(both) == "suspended")

        await holds.resume(Target("domain", "held.example"))
        assert run.release() == [both]
        (_, tx) = await rx.wait_for(2)
        assert tx.rcpt_tos == ("a@held.example",)
        await until(lambda: spool.depth() == 0)
        await run.stop()
    assert len(rx.transactions) == 2  # no DSN: nothing bounced


async def test_a_credential_suspension_holds_its_mail_only(spool: Spool) -> None:
    holds = Holds()
    await holds.suspend(Target("credential", "billing"), "alice", 1.0)
    async with SmtpReceiver() as rx:
        run = runner(spool, rx.port, holds, CollectorRegistry())
        await run.start()
        held = await put(spool, run, ["a@x.example"], credential="billing")
        await put(spool, run, ["b@x.example"], credential="news")
        (tx,) = await rx.wait_for(1)
        assert tx.rcpt_tos == ("b@x.example",)
        await until(lambda: run.state(held) == "suspended")
        await holds.resume(Target("credential", "billing"))
        assert run.release() == [held]
        await rx.wait_for(2)
        await run.stop()


async def test_an_administrator_bounce_is_refused_in_flight_and_for_an_unknown_entry(spool: Spool) -> None:
    async with SmtpReceiver(data_delay=1.0) as rx:  # keeps the attempt in flight for a second
        run = runner(spool, rx.port, Holds(), CollectorRegistry())
        await run.start()
        qid = await put(spool, run, ["a@x.example"])
        await until(lambda: run.state(qid) == "in flight")
        with pytest.raises(InFlight):
            await run.admin_bounce(qid, list, "too late", "alice")
        with pytest.raises(LookupError):
            await run.admin_bounce("0" * 26, list, "never here", "alice")
        await rx.wait_for(1)
        await run.stop()
