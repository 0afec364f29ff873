"""The queue runner over a real spool, delivering to real receiving SMTP servers on loopback."""

from __future__ import annotations

import asyncio
import email
import logging
import time
from pathlib import Path

import dkim
import pytest
from deliverykit import message, rsa_key
from mta_relay import config as rc
from mta_relay.delivery.backoff import RetryPolicy
from mta_relay.delivery.client import HopPolicy, TlsMode
from mta_relay.delivery.holds import Holds
from mta_relay.delivery.metrics import DeliveryMetrics
from mta_relay.delivery.mx import Hop
from mta_relay.delivery.pool import ConnectionPool
from mta_relay.delivery.router import Deliverer, Route, smarthost_route
from mta_relay.delivery.shaping import Shaper, ShapingTable
from mta_relay.dkim_sign import DkimKey, DkimSigner
from mta_relay.queue import QueueRunner, QueueSettings
from mta_relay.queue_admin import Target
from mta_relay.spool import Spool
from prometheus_client import CollectorRegistry
from support.smtp_receiver import SmtpReceiver

FAST_RETRY = RetryPolicy(first=0.05, cap=0.2, max_age=60)


def policy(port: int) -> HopPolicy:
    return HopPolicy(helo_name="mta.test", port=port, tls=TlsMode.NONE, connect_timeout=2, command_timeout=5)


class Harness:
    def __init__(self, spool: Spool, route: Route, *, retry: RetryPolicy = FAST_RETRY,
                 rate: tuple[int, float] | None = None, signer: DkimSigner | None = None,
                 shaper: Shaper | None = None, holds: Holds | None = None) -> None:
        self.registry = CollectorRegistry()
        self.runner = QueueRunner(spool, Deliverer(route, ConnectionPool(), shaper),
                                  QueueSettings("mta.test", retry=retry, rate_limit=rate, drain_margin=0.2),
                                  signer=signer, metrics=DeliveryMetrics(self.registry), holds=holds)
        self.spool = spool

    async def put(self, mail_from: str = "app@example.com", rcpts: tuple[str, ...] = ("bob@example.net",),
                  data: bytes | None = None, notify: bool = True) -> str:
        env = await self.spool.put(mail_from=mail_from, rcpts=list(rcpts), credential="app",
                                   client_ip="127.0.0.1", source="smtp", smtputf8=False,
                                   message=data or message(sender=mail_from))
        if notify:
            self.runner.notify(env.queue_id)
        return env.queue_id

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    spool = Spool(tmp_path / "spool")
    spool.recover()
    return spool


async def wait_until(predicate, within: float = 10.0) -> None:
    end = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < end, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_delivered_byte_identical_apart_from_dkim_header(spool: Spool) -> None:
    pem, txt = rsa_key()
    original = message(body=b"line one\r\n.dot line\r\n\r\n-- \r\nsig\r\n")
    async with SmtpReceiver() as rx:
        h = Harness(spool, smarthost_route("127.0.0.1", policy(rx.port)),
                    signer=DkimSigner([DkimKey("example.com", "sel", pem)]))
        await h.runner.start()
        await h.put(data=original)
        [tx] = await rx.wait_for(1)
        await wait_until(lambda: spool.depth() == 0)
        await h.runner.stop()
    assert tx.mail_from == "app@example.com"
    assert tx.rcpt_tos == ("bob@example.net",)
    first, rest = tx.data.split(b"\r\n", 1)
    assert first.startswith(b"DKIM-Signature:")
    while rest[:1] in (b" ", b"\t"):  # the folded DKIM-Signature continues
        rest = rest.split(b"\r\n", 1)[1]
    assert rest == original
    assert dkim.verify(tx.data, dnsfunc=lambda name, timeout=5: txt if name == b"sel._domainkey.example.com."
                       else None)
    assert h.metric("mta_delivery_results_total", result="delivered", reply_class="2xx") == 1
    assert h.metric("mta_delivery_latency_seconds_count") == 1


async def test_451_three_times_then_250_delivers_once(spool: Spool) -> None:
    async with SmtpReceiver() as rx:
        rx.script("data", "451 4.3.0 try again later", times=3)
        h = Harness(spool, smarthost_route("127.0.0.1", policy(rx.port)))
        await h.runner.start()
        await h.put()
        await rx.wait_for(1)
        await wait_until(lambda: spool.depth() == 0)
        await asyncio.sleep(0.5)  # room for a wrong extra attempt
        await h.runner.stop()
    assert len(rx.transactions) == 1
    assert rx.mail_commands() == 4
    assert h.metric("mta_delivery_attempts_total") == 4
    assert h.metric("mta_delivery_results_total", result="deferred", reply_class="4xx") == 3


async def test_per_recipient_outcomes_only_deferred_are_retried(spool: Spool) -> None:
    async with SmtpReceiver() as rx:
        rx.script("rcpt:carol@example.net", "452 4.2.2 mailbox full")
        h = Harness(spool, smarthost_route("127.0.0.1", policy(rx.port)))
        await h.runner.start()
        await h.put(rcpts=("bob@example.net", "carol@example.net"))
        await rx.wait_for(2)
        await wait_until(lambda: spool.depth() == 0)
        await h.runner.stop()
    assert [t.rcpt_tos for t in rx.transactions] == [("bob@example.net",), ("carol@example.net",)]


async def test_550_sends_dsn_to_envelope_sender(spool: Spool) -> None:
    async with SmtpReceiver() as rx:
        rx.script("rcpt:nobody@example.net", "550 5.1.1 <nobody@example.net>: no such user")
        h = Harness(spool, smarthost_route("127.0.0.1", policy(rx.port)))
        await h.runner.start()
        await h.put(rcpts=("nobody@example.net",), data=message(body=b"private words\r\n"))
        [dsn] = await rx.wait_for(1)
        await wait_until(lambda: spool.depth() == 0)
        await h.runner.stop()
    assert dsn.mail_from == "<>"  # aiosmtpd spells the null sender so
    assert dsn.rcpt_tos == ("app@example.com",)
    report = email.message_from_bytes(dsn.data)
    assert report.get_content_type() == "multipart/report"
    [_per_message, rcpt] = report.get_payload()[1].get_payload()
    assert rcpt["Final-Recipient"] == "rfc822; nobody@example.net"
    assert rcpt["Status"] == "5.1.1"
    assert b"private words" not in dsn.data
    assert h.metric("mta_dsn_generated_total") == 1
    assert h.metric("mta_delivery_bounces_total", reason="rejected") == 1


async def test_null_sender_never_gets_a_dsn(spool: Spool) -> None:
    async with SmtpReceiver() as rx:
        rx.script("rcpt", "550 5.1.1 no such user")
        h = Harness(spool, smarthost_route("127.0.0.1", policy(rx.port)))
        await h.runner.start()
        await h.put(mail_from="")
        await wait_until(lambda: spool.depth() == 0)
        await asyncio.sleep(0.3)
        await h.runner.stop()
    assert rx.transactions == []
    assert rx.mail_commands() == 1
    assert h.metric("mta_delivery_bounces_total", reason="rejected") == 1


async def test_unreachable_past_max_retry_age_bounces(spool: Spool) -> None:
    async with SmtpReceiver("127.0.0.1") as rx:
        hops = {"example.com": [Hop("mx.example.com", "127.0.0.1")],  # the sender's side, reachable
                "dead.example": [Hop("mx.dead.example", "127.0.0.2")]}  # nothing listens there

        async def resolve(domain: str) -> list[Hop]:
            return hops[domain]
        retry = RetryPolicy(first=0.1, cap=0.2, max_age=1.0)
        h = Harness(spool, Route(policy(rx.port), resolve, by_domain=True), retry=retry)
        await h.runner.start()
        started = time.monotonic()
        await h.put(rcpts=("who@dead.example",))
        [dsn] = await rx.wait_for(1, within=10)
        await wait_until(lambda: spool.depth() == 0)
        await h.runner.stop()
    assert time.monotonic() - started >= 1.0
    assert dsn.rcpt_tos == ("app@example.com",)
    assert b"maximum retry age" in dsn.data
    assert b"Status: 4.4.1" in dsn.data
    assert h.metric("mta_delivery_bounces_total", reason="expired") == 1
    assert h.metric("mta_delivery_attempts_total") >= 4  # retried with backoff meanwhile


async def test_rate_limit_holds_mail_and_never_rejects(spool: Spool) -> None:
    period = 1.5
    async with SmtpReceiver() as rx:
        h = Harness(spool, smarthost_route("127.0.0.1", policy(rx.port)), rate=(10, period))
        await h.runner.start()
        for _ in range(30):
            await h.put()
        began = time.monotonic()
        counts = []
        for checkpoint in (0.5, 1.5, 2.5):  # mid-window: transaction latency cannot blur the batches
            await asyncio.sleep(began + checkpoint * period - time.monotonic())
            counts.append(len(rx.transactions))
            if checkpoint == 0.5:
                assert h.metric("mta_queue_messages", state="held") == 20
                assert h.metric("mta_queue_held_messages", reason="ratelimit") == 20
        await rx.wait_for(30, within=2 * period)
        await h.runner.stop()
    assert counts == [10, 20, 30]
    assert h.metric("mta_ratelimit_held_total") >= 2
    assert spool.depth() == 0


async def test_corrupt_entry_is_quarantined_not_delivered(spool: Spool) -> None:
    async with SmtpReceiver() as rx:
        h = Harness(spool, smarthost_route("127.0.0.1", policy(rx.port)))
        good = await h.put(notify=False)
        bad = await h.put(data=message(body=b"x" * 5000), notify=False)
        path = spool.path(bad)
        path.write_bytes(path.read_bytes()[:3000])  # torn: cut in the middle of the body
        await h.runner.start()
        [tx] = await rx.wait_for(1)
        # The counter goes up once the quarantine is done, a moment after the spool stops listing it.
        await wait_until(lambda: spool.depth() == 0 and h.metric("mta_queue_quarantined_total") == 1)
        await h.runner.stop()
    assert b"x" * 100 not in tx.data
    assert spool.queue_ids() == []
    assert (spool.quarantine_dir / f"{bad}.msg").exists()
    assert not (spool.quarantine_dir / f"{good}.msg").exists()
    assert h.metric("mta_queue_quarantined_total") == 1


async def test_drain_stops_by_deadline_and_restart_delivers_the_rest(spool: Spool) -> None:
    async with SmtpReceiver(data_delay=0.3) as rx:
        route = smarthost_route("127.0.0.1", policy(rx.port))
        h = Harness(spool, route)
        await h.runner.start()
        ids = {await h.put() for _ in range(60)}
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await h.runner.drain(deadline=started + 1.0)
        # Not a speed figure: it returns near its deadline rather than after all 60 (checked below);
        # the slack is for a loaded shared CI machine.
        assert time.monotonic() - started < 3.0
        first_round = len(rx.transactions)
        left = set(spool.queue_ids())
        assert 0 < first_round < 60
        assert left  # the rest waits on the spool
        assert ids - left  # and what was delivered is gone from it
        again = Harness(spool, route)
        await again.runner.start()
        await rx.wait_for(60 - len(ids - left) + first_round, within=15)
        await wait_until(lambda: spool.depth() == 0)
        await again.runner.stop()
    assert len(rx.transactions) >= 60
    # Cut-off transactions never count as delivered: each message arrived, none in part.
    assert {t.data for t in rx.transactions} == {message()}


async def test_queue_metrics_report_depth_states_and_oldest_age(spool: Spool) -> None:
    async with SmtpReceiver() as rx:
        rx.script("data", "451 4.3.0 later", times=100)
        h = Harness(spool, smarthost_route("127.0.0.1", policy(rx.port)),
                    retry=RetryPolicy(first=30, cap=60, max_age=3600))
        await h.runner.start()
        await h.put()
        await h.put()
        await wait_until(lambda: h.metric("mta_queue_messages", state="deferred") == 2)
        await asyncio.sleep(0.2)
        assert h.metric("mta_queue_messages", state="active") == 0
        assert h.metric("mta_queue_oldest_message_age_seconds") >= 0.2
        await h.runner.stop()
    assert spool.depth() == 2


def partner_shaper(suspend_first: float = 60.0, **limits: int) -> Shaper:
    """A shaper whose rule "partner" matches the smarthost 127.0.0.1 (a smarthost route's destination)."""
    rule = rc.ShapingRule(name="partner", mx_hosts=["127.0.0.1"], **limits)
    return Shaper(ShapingTable(rc.Shaping(rules=[rule])), suspend_first=suspend_first)


async def test_a_throttled_destination_shows_in_the_metrics_until_its_suspension_ends(spool: Spool) -> None:
    async with SmtpReceiver() as rx:
        rx.script("mail", "421 4.7.0 [TSS04] Messages temporarily deferred due to volume")
        h = Harness(spool, smarthost_route("127.0.0.1", policy(rx.port)),
                    shaper=partner_shaper(suspend_first=2.0))
        await h.runner.start()
        await h.put()
        await wait_until(lambda: h.metric("mta_queue_held_messages", reason="shaping") == 1)
        assert h.metric("mta_delivery_destinations_suspended") == 1
        assert h.metric("mta_delivery_throttle_suspensions_total", rule="partner") == 1
        assert h.metric("mta_queue_messages", state="held") == 1
        assert h.metric("mta_queue_held_messages", reason="suspended") == 0

        await rx.wait_for(1, within=10)  # the suspension ended: released and delivered
        await wait_until(lambda: h.metric("mta_queue_held_messages", reason="shaping") == 0)
        assert h.metric("mta_delivery_destinations_suspended") == 0
        assert h.metric("mta_delivery_throttle_suspensions_total", rule="partner") == 1  # counted once
        await h.runner.stop()


async def test_a_421_at_the_greeting_suspends_with_a_log_line_naming_it_and_the_end_is_logged(
        spool: Spool, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mta_relay.queue")
    async with SmtpReceiver() as rx:
        rx.script("greeting", "421 4.7.0 Too many connections from your IP")
        h = Harness(spool, smarthost_route("127.0.0.1", policy(rx.port)),
                    shaper=partner_shaper(suspend_first=0.5))
        await h.runner.start()
        await h.put()
        await rx.wait_for(1, within=10)
        await wait_until(lambda: logged(caplog, "destination_suspension_ended"))
        await h.runner.stop()
    assert rx.refused_greetings == 1
    [started] = logged(caplog, "destination_suspended")
    assert started == {"event": "destination_suspended", "destination": "route:default", "rule": "partner",
                       "suspended_seconds": 0.5, "strikes": 1, "code": 421, "status": "4.7.0",
                       "reply": "4.7.0 Too many connections from your IP"}
    [ended] = logged(caplog, "destination_suspension_ended")
    assert (ended["destination"], ended["rule"], ended["strikes"]) == ("route:default", "partner", 1)
    assert ended["throttled_seconds"] >= 0.5


def logged(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, object]]:
    """The fields of the runner's log records of one ``event``."""
    return [r.fields for r in caplog.records if getattr(r, "fields", {}).get("event") == event]


async def test_mail_over_a_destinations_limits_is_held_for_shaping_with_no_suspension(spool: Spool) -> None:
    async with SmtpReceiver(data_delay=1.0) as rx:  # the first transaction keeps the one connection a second
        h = Harness(spool, smarthost_route("127.0.0.1", policy(rx.port)),
                    shaper=partner_shaper(max_connections=1))
        await h.runner.start()
        await h.put()
        await h.put()
        await wait_until(lambda: h.metric("mta_queue_held_messages", reason="shaping") == 1)
        assert h.metric("mta_delivery_destinations_suspended") == 0

        await rx.wait_for(2, within=10)
        await wait_until(lambda: h.metric("mta_queue_held_messages", reason="shaping") == 0)
        assert h.metric("mta_delivery_throttle_suspensions_total", rule="partner") == 0
        await h.runner.stop()


async def test_a_queue_suspension_shows_in_the_held_messages_until_resumed(spool: Spool) -> None:
    holds = Holds()
    await holds.suspend(Target("domain", "held.example"), "alice", 1.0)
    async with SmtpReceiver() as rx:
        h = Harness(spool, smarthost_route("127.0.0.1", policy(rx.port)), holds=holds)
        await h.runner.start()
        held = await h.put(rcpts=("a@held.example",))
        await h.put(rcpts=("b@open.example",))
        await wait_until(lambda: h.metric("mta_queue_held_messages", reason="suspended") == 1)
        assert h.metric("mta_queue_suspensions", kind="domain") == 1
        assert h.metric("mta_queue_suspensions", kind="credential") == 0
        assert h.metric("mta_queue_held_messages", reason="shaping") == 0
        assert h.metric("mta_delivery_destinations_suspended") == 0

        await holds.resume(Target("domain", "held.example"))
        assert h.runner.release() == [held]
        await rx.wait_for(2)
        assert h.metric("mta_queue_held_messages", reason="suspended") == 0
        assert h.metric("mta_queue_suspensions", kind="domain") == 0
        await h.runner.stop()


async def test_mixed_outcomes_deliver_bounce_and_retry_each_recipient_once(spool: Spool) -> None:
    async with SmtpReceiver() as rx:
        rx.script("rcpt:gone@example.net", "550 5.1.1 no such user")
        rx.script("rcpt:later@example.net", "451 4.2.0 greylisted")
        h = Harness(spool, smarthost_route("127.0.0.1", policy(rx.port)))
        await h.runner.start()
        await h.put(rcpts=("now@example.net", "gone@example.net", "later@example.net"))
        await rx.wait_for(3)
        await wait_until(lambda: spool.depth() == 0)
        await asyncio.sleep(0.3)
        await h.runner.stop()
    by_rcpt = sorted((t.mail_from, t.rcpt_tos) for t in rx.transactions)
    assert by_rcpt == [("<>", ("app@example.com",)), ("app@example.com", ("later@example.net",)),
                       ("app@example.com", ("now@example.net",))]
    dsn = next(t for t in rx.transactions if t.mail_from == "<>")
    assert b"Final-Recipient: rfc822; gone@example.net" in dsn.data
    assert b"later@example.net" not in dsn.data.split(b"text/rfc822-headers")[0]
