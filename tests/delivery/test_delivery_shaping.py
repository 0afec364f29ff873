"""Shaping, throttle suspensions and routes, end to end: the real ``mta-relay`` process delivering to real
receiving SMTP servers, found through a real DNS server (MX and A records) or named as smarthosts.

Each MX destination is its own receiver on its own loopback address (127.0.0.2, 127.0.0.3, ...), all on
one port that the relay is told to use for MX hosts (``delivery.mxPort``: 25 needs root). What the
limits allow is measured at the receivers: connections and transactions open at once, MAIL FROM
commands per connection, and when each transaction arrived.
"""

from __future__ import annotations

import json
import smtplib
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml
from deliverykit import free_port, message
from relayproc import PASSWORD, USERNAME, RelayProcess
from support.dnsserver import DnsServer
from support.receiver_thread import ThreadedReceiver
from support.smtp_receiver import SmtpReceiver
from support.waiting import wait_until


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    with DnsServer() as server:
        yield server


def receivers(stack: ExitStack, count: int, **kwargs: Any) -> list[ThreadedReceiver]:
    """``count`` receivers on 127.0.0.2, 127.0.0.3, ... sharing one port."""
    for _ in range(20):
        port = free_port()
        try:
            return [stack.enter_context(ThreadedReceiver(f"127.0.0.{2 + i}", port=port, **kwargs))
                    for i in range(count)]
        except OSError:
            continue
    raise OSError("no port free on every loopback address")


def publish(dns_server: DnsServer, domain: str, rx: ThreadedReceiver) -> None:
    dns_server.add(domain, "MX", f"10 mx.{domain}.")
    dns_server.add(f"mx.{domain}", "A", rx.host)


def mx_relay(tmp_path: Path, dns_server: DnsServer, port: int, shaping: dict[str, Any],
             **delivery: Any) -> RelayProcess:
    return RelayProcess(tmp_path, 0, delivery={"mode": "MX", "mxPort": port, "shaping": shaping, **delivery},
                        dns={"nameservers": [dns_server.address], "port": dns_server.port,
                             "timeoutSeconds": 2})


def submit_many(relay: RelayProcess, mails: list[tuple[str, list[str]]]) -> None:
    """Every (sender, recipients) as one message, over one authenticated session."""
    with smtplib.SMTP("127.0.0.1", relay.smtp_port, timeout=10) as smtp:
        smtp.starttls(context=relay.client_tls)
        smtp.login(USERNAME, PASSWORD)
        for i, (sender, rcpts) in enumerate(mails):
            smtp.sendmail(sender, rcpts, message(sender=sender, to=rcpts[0], subject=f"m{i}"))


def at_most_per_period(times: list[float], messages: int, period: float, slack: float = 0.25) -> None:
    """Arrivals respect ``messages`` per sliding ``period``. The relay counts a transaction when it starts,
    before it connects; the receiver sees it after the connection's set-up if a new one was needed (tens
    of ms warm, up to 0.5 s for a relay's very first one on two busy cores): ``slack`` allows for that."""
    times = sorted(times)
    for i in range(len(times) - messages):
        assert times[i + messages] - times[i] >= period - slack, (i, times)


def allow_senders(relay: RelayProcess, domains: list[str]) -> None:
    """The test credential may send from ``domains``."""
    path = relay.dir / "credentials" / "credentials-000.json"
    shard = json.loads(path.read_text())
    shard["credentials"][0]["domains"] = {"mode": "Specific", "names": domains}
    path.write_text(json.dumps(shard))


def rx_of(threaded: ThreadedReceiver) -> SmtpReceiver:
    return threaded.receiver


def test_two_destinations_each_get_their_own_connections_and_rate(tmp_path: Path,
                                                                   dns_server: DnsServer) -> None:
    with ExitStack() as stack:
        wide, narrow = receivers(stack, 2, data_delay=0.05)
        publish(dns_server, "wide.test", wide)
        publish(dns_server, "narrow.test", narrow)
        shaping = {"builtin": True, "rules": [
            # Connections kept (100 per connection): open connections at the receiver are the limit.
            {"name": "wide", "domains": ["wide.test"], "maxConnections": 3, "messagesPerConnection": 100,
             "rate": {"messages": 6, "periodSeconds": 1}},
            {"name": "narrow", "mxHosts": [".narrow.test"], "maxConnections": 1, "messagesPerConnection": 2,
             "rate": {"messages": 3, "periodSeconds": 1}},
        ]}
        relay = stack.enter_context(_running(mx_relay(tmp_path, dns_server, wide.port, shaping)))
        # Warm up (DNS, first connections, the relay's first-use code paths), then leave the rate windows.
        submit_many(relay, [("app@example.com", ["w@wide.test"]), ("app@example.com", ["n@narrow.test"])])
        wide.wait_for(1)
        narrow.wait_for(1)
        time.sleep(1.2)
        count = 15
        started = time.monotonic()
        submit_many(relay, [("app@example.com", [f"w{i}@wide.test"]) for i in range(count)]
                    + [("app@example.com", [f"n{i}@narrow.test"]) for i in range(count)])
        wide.wait_for(1 + count, within=30)
        narrow.wait_for(1 + count, within=30)
        narrow_span = max(t.at for t in narrow.transactions) - started
        wide_rx, narrow_rx = rx_of(wide), rx_of(narrow)
        print(f"wide: peak {wide_rx.peak_connections} connections, {wide_rx.peak_transactions} transactions; "
              f"narrow: peak {narrow_rx.peak_transactions} transactions, "
              f"{len(narrow_rx.connections)} connections, all {count} in {narrow_span:.2f} s")
        assert 1 <= wide_rx.peak_connections <= 3
        assert wide_rx.peak_transactions <= 3
        at_most_per_period([t.at for t in wide.transactions[1:]], 6, 1.0)
        assert narrow_rx.peak_transactions == 1
        assert all(log.commands("MAIL FROM") <= 2 for log in narrow_rx.connections)
        assert len(narrow_rx.connections) >= (1 + count) // 2
        at_most_per_period([t.at for t in narrow.transactions[1:]], 3, 1.0)
        assert narrow_span >= (count - 3) / 3 - 0.4  # three at once, then three a second
        assert not relay.spool_entries()


TSS04 = "421 4.7.0 [TSS04] Messages temporarily deferred due to volume"


def test_a_throttling_destination_is_suspended_then_resumed_and_others_go_on(tmp_path: Path,
                                                                             dns_server: DnsServer) -> None:
    with ExitStack() as stack:
        busy, calm = receivers(stack, 2)
        publish(dns_server, "busy.test", busy)
        publish(dns_server, "calm.test", calm)
        rx_of(busy).script("mail", TSS04, times=2)
        shaping = {"suspendFirstSeconds": 1.0, "suspendMaxSeconds": 10,
                   "rules": [{"name": "busy", "domains": ["busy.test"], "maxConnections": 1}]}
        relay = stack.enter_context(_running(mx_relay(tmp_path, dns_server, busy.port, shaping)))
        submit_many(relay, [("app@example.com", [f"b{i}@busy.test"]) for i in range(4)])
        wait_until(lambda: len(rx_of(busy).mail_times) >= 1, 10, "the first MAIL FROM at busy.test")
        throttled_at = rx_of(busy).mail_times[0]
        # While busy.test is suspended, calm.test takes its mail at once.
        submit_many(relay, [("app@example.com", [f"c{i}@calm.test"]) for i in range(3)])
        calm.wait_for(3, within=5)
        assert max(t.at for t in calm.transactions) < throttled_at + 1.0
        busy.wait_for(4, within=20)
        first, second, third = rx_of(busy).mail_times[:3]
        print(f"busy.test: MAIL FROM at +0, +{second - first:.2f} s, +{third - first:.2f} s")
        assert second - first >= 0.95  # suspended 1 s after the first 421
        assert third - second >= 1.9  # a repeat doubles the suspension
        assert len(rx_of(busy).mail_times) == 4 + 2  # nothing tried while suspended; each message once more
        delivered = sorted(r for t in busy.transactions for r in t.rcpt_tos)
        assert delivered == [f"b{i}@busy.test" for i in range(4)]
        wait_until(lambda: not relay.spool_entries(), 10, "the spool empty")
        log = relay.log.read_text()
        assert '"bounced"' not in log  # never bounced for a throttle
        events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        assert not [e for e in events if e.get("fields", e).get("event") == "deferred"]  # no failed try
        # One line per suspension started, naming the destination, its rule, the length and the reply;
        # one when a delivery there ended the row of suspensions.
        suspended = [e for e in events if e.get("event") == "destination_suspended"]
        assert [(e["destination"], e["rule"], e["suspended_seconds"], e["strikes"], e["code"], e["status"])
                for e in suspended] == [("domain:busy.test", "busy", 1.0, 1, 421, "4.7.0"),
                                        ("domain:busy.test", "busy", 2.0, 2, 421, "4.7.0")]
        assert {e["reply"] for e in suspended} == {TSS04[4:]}
        [ended] = [e for e in events if e.get("event") == "destination_suspension_ended"]
        assert (ended["destination"], ended["rule"], ended["strikes"]) == ("domain:busy.test", "busy", 2)
        assert ended["throttled_seconds"] >= 3.0 - 0.1  # 1 s, then 2 s
        assert PASSWORD not in log
        assert "see you" not in log  # the message's body
        # The delivery process's metrics at the front door: two suspensions under the rule's name, over now.
        assert relay.metric("mta_delivery_throttle_suspensions_total", rule="busy") == 2
        assert relay.metric("mta_delivery_destinations_suspended") == 0
        assert relay.metric("mta_queue_held_messages", reason="shaping") == 0


def log_events(relay: RelayProcess, event: str) -> list[dict[str, Any]]:
    """The relay's JSON log lines (both processes) of one ``event``."""
    lines = [json.loads(line) for line in relay.log.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == event]


def reload_shaping(relay: RelayProcess, shaping: dict[str, Any]) -> None:
    """Rewrite ``delivery.shaping`` as the operator would; return once the delivery process applied it."""
    applied = len(log_events(relay, "delivery_config_applied"))
    path = relay.dir / "relay.yaml"
    settings = yaml.safe_load(path.read_text())
    settings["delivery"]["shaping"] = shaping
    path.write_text(yaml.safe_dump(settings))
    wait_until(lambda: len(log_events(relay, "delivery_config_applied")) > applied, 10,
               "the delivery process to apply the reload")
    [*_, last] = log_events(relay, "delivery_config_applied")
    assert last["route"] == "rebuilt"  # the shaping changed: a new deliverer, the same counters


def test_a_reload_keeps_suspensions_and_rate_windows_and_applies_the_new_limits(
        tmp_path: Path, dns_server: DnsServer) -> None:
    suspension, period = 6.0, 8.0
    with ExitStack() as stack:
        busy, paced = receivers(stack, 2)
        publish(dns_server, "busy.test", busy)
        publish(dns_server, "paced.test", paced)
        rx_of(busy).script("mail", TSS04)
        shaping = {"suspendFirstSeconds": suspension, "suspendMaxSeconds": 60, "rules": [
            {"name": "busy", "domains": ["busy.test"], "maxConnections": 1},
            {"name": "paced", "domains": ["paced.test"], "rate": {"messages": 2, "periodSeconds": period}}]}
        relay = stack.enter_context(_running(mx_relay(tmp_path, dns_server, busy.port, shaping)))
        started = time.monotonic()  # the rate window's starts come after this
        submit_many(relay, [("app@example.com", ["b@busy.test"]),
                            ("app@example.com", ["p0@paced.test"]), ("app@example.com", ["p1@paced.test"])])
        paced.wait_for(2, within=10)
        wait_until(lambda: rx_of(busy).mail_times, 10, "the 421 at busy.test")
        throttled_at = rx_of(busy).mail_times[0]
        # Both rules change: busy.test's limits, paced.test's rate (3 in the period now, not 2).
        reload_shaping(relay, {**shaping, "rules": [
            {"name": "busy", "domains": ["busy.test"], "maxConnections": 2},
            {"name": "paced", "domains": ["paced.test"], "rate": {"messages": 3, "periodSeconds": period}}]})
        reloaded = time.monotonic()
        assert reloaded < throttled_at + suspension - 2, "the reload came too late to show anything"
        assert relay.metric("mta_delivery_destinations_suspended") == 1
        submit_many(relay, [("app@example.com", [f"q{i}@paced.test"]) for i in range(3)])
        # The window kept its two starts and takes the new rate: one more now, the others when it moves.
        paced.wait_for(3, within=5)
        while time.monotonic() < started + period - 0.5:
            assert len(paced.transactions) == 3, "the reload opened a fresh rate window"
            if time.monotonic() < throttled_at + suspension - 0.1:
                assert not busy.transactions, "the reload ended busy.test's suspension"
            time.sleep(0.05)
        busy.wait_for(1, within=suspension + 5)
        paced.wait_for(5, within=period + 5)
        wait_until(lambda: not relay.spool_entries(), 10, "the spool empty")
    delivered_at = busy.transactions[0].at
    print(f"busy.test: 421 at +0, reload at +{reloaded - throttled_at:.2f} s, "
          f"delivered at +{delivered_at - throttled_at:.2f} s")
    assert delivered_at >= throttled_at + suspension - 0.1
    assert sorted(t.at for t in paced.transactions)[3] >= started + period - 0.25
    assert len(log_events(relay, "destination_suspended")) == 1  # one suspension, across the reload
    [ended] = log_events(relay, "destination_suspension_ended")
    assert ended["destination"] == "domain:busy.test"


def test_routes_by_recipient_and_sender_domain_with_smarthost_failover(tmp_path: Path) -> None:
    with ExitStack() as stack:
        default = stack.enter_context(ThreadedReceiver())
        partners = stack.enter_context(ThreadedReceiver())
        news = stack.enter_context(ThreadedReceiver())
        dead = free_port()  # nothing listens: the first smarthost of the partners' route cannot be reached
        routes = [
            {"name": "partners", "recipientDomains": ["partner.test"], "mode": "Smarthost", "smarthosts": [
                {"host": "127.0.0.1", "port": dead, "tls": "None"},
                {"host": "127.0.0.1", "port": partners.port, "tls": "None"}]},
            {"name": "news", "senderDomains": ["news.example.com"], "mode": "Smarthost",
             "smarthosts": [{"host": "127.0.0.1", "port": news.port, "tls": "None"}]},
        ]
        relay = RelayProcess(tmp_path, default.port,
                             delivery={"mode": "Smarthost", "routes": routes, "smarthost": {
                                 "host": "127.0.0.1", "port": default.port, "tls": "None"}},
                             domains=[{"domain": "example.com"}, {"domain": "news.example.com"}])
        allow_senders(relay, ["example.com", "news.example.com"])
        stack.enter_context(_running(relay))
        submit_many(relay, [
            ("app@example.com", ["a@else.test"]),  # default
            ("app@example.com", ["b@partner.test"]),  # by recipient, after failing over
            ("app@news.example.com", ["c@else.test"]),  # by sender
            ("app@news.example.com", ["d@partner.test"]),  # recipient beats sender
            ("app@example.com", ["e@else.test", "f@partner.test"]),  # split between two routes
        ])
        default.wait_for(2)
        partners.wait_for(3)
        news.wait_for(1)
        got = {rx: sorted(r for t in rx.transactions for r in t.rcpt_tos) for rx in (default, partners, news)}
        assert got[default] == ["a@else.test", "e@else.test"]
        assert got[partners] == ["b@partner.test", "d@partner.test", "f@partner.test"]
        assert got[news] == ["c@else.test"]
        wait_until(lambda: not relay.spool_entries(), 10, "the spool empty")


def test_smarthost_failover_past_a_421_greeting_and_a_4xx_to_ehlo(tmp_path: Path) -> None:
    with ExitStack() as stack:
        busy, refusing, taking = (stack.enter_context(ThreadedReceiver()) for _ in range(3))
        rx_of(busy).script("greeting", "421 4.7.0 Too many connections, try again later", times=100)
        rx_of(refusing).script("ehlo", "451 4.3.2 System not accepting network messages", times=100)
        routes = [{"name": "partners", "recipientDomains": ["partner.test"], "mode": "Smarthost",
                   "smarthosts": [{"host": "127.0.0.1", "port": rx.port, "tls": "None"}
                                  for rx in (busy, refusing, taking)]}]
        relay = RelayProcess(tmp_path, taking.port, delivery={
            "mode": "Smarthost", "routes": routes,
            "smarthost": {"host": "127.0.0.1", "port": taking.port, "tls": "None"}})
        stack.enter_context(_running(relay))
        submit_many(relay, [("app@example.com", ["a@partner.test"])])
        [tx] = taking.wait_for(1, within=10)
        wait_until(lambda: not relay.spool_entries(), 10, "the spool empty")
        # Both refusing smarthosts were asked first, in order, and took nothing.
        assert rx_of(busy).refused_greetings >= 1
        assert rx_of(refusing).connections
        assert all(log.commands("MAIL FROM") == 0 for log in rx_of(refusing).connections)
        assert not busy.transactions
        assert not refusing.transactions
        assert tx.rcpt_tos == ("a@partner.test",)
        # The first attempt delivered: no deferral, and a greeting refused by one smarthost of a route that
        # another one took is not a throttle of the route.
        assert not log_events(relay, "deferred")
        assert not log_events(relay, "destination_suspended")
        assert relay.metric("mta_delivery_throttle_suspensions_total", rule="default") is None


class _running:
    """Start the relay; stop it at the end of the block."""

    def __init__(self, relay: RelayProcess) -> None:
        self.relay = relay

    def __enter__(self) -> RelayProcess:
        return self.relay.start()

    def __exit__(self, *exc: object) -> None:
        self.relay.stop()
