"""MX delivery: a real loopback DNS server answers, real receivers listen at the MX addresses."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest
from deliverykit import free_port, message, server_context
from mta_relay.delivery.client import HopPolicy, TlsMode
from mta_relay.delivery.mx import make_resolver
from mta_relay.delivery.outcome import Result
from mta_relay.delivery.pool import ConnectionPool
from mta_relay.delivery.router import Deliverer, mx_route
from support.dnsserver import DnsServer
from support.smtp_receiver import SmtpReceiver


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    with DnsServer() as server:
        yield server


@pytest.fixture
def port() -> int:
    return free_port()  # every receiver of a test listens on this port, each on its own address


def deliverer(dns_server: DnsServer, port: int) -> Deliverer:
    policy = HopPolicy(helo_name="mta.test", port=port, tls=TlsMode.OPPORTUNISTIC, connect_timeout=2,
                       command_timeout=5)
    return Deliverer(mx_route(make_resolver([dns_server.address], dns_server.port, 2.0), policy),
                     ConnectionPool())


@contextlib.asynccontextmanager
async def receivers(port: int, *hosts: str, **kw) -> AsyncIterator[list[SmtpReceiver]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(SmtpReceiver(host, port, **kw)) for host in hosts]


async def test_lowest_preference_first(dns_server: DnsServer, port: int) -> None:
    dns_server.add("example.net", "MX", "20 mx2.example.net.", "10 mx1.example.net.")
    dns_server.add("mx1.example.net", "A", "127.0.0.11")
    dns_server.add("mx2.example.net", "A", "127.0.0.12")
    async with receivers(port, "127.0.0.11", "127.0.0.12") as (mx1, mx2):
        d = deliverer(dns_server, port)
        for _ in range(3):
            [result] = await d.deliver("a@example.com", ["bob@example.net"], message())
            assert result.result is Result.DELIVERED
            assert result.remote == "mx1.example.net"
        await d.pool.close()
    assert len(mx1.transactions) == 3
    assert mx2.transactions == []


async def test_dead_first_mx_falls_through_to_next(dns_server: DnsServer, port: int) -> None:
    dns_server.add("example.net", "MX", "10 mx1.example.net.", "20 mx2.example.net.")
    dns_server.add("mx1.example.net", "A", "127.0.0.21")  # nothing listens there
    dns_server.add("mx2.example.net", "A", "127.0.0.22")
    async with receivers(port, "127.0.0.22") as (mx2,):
        d = deliverer(dns_server, port)
        [result] = await d.deliver("a@example.com", ["bob@example.net"], message())
        await d.pool.close()
    assert result.result is Result.DELIVERED
    assert result.remote == "mx2.example.net"
    assert len(mx2.transactions) == 1


async def test_no_mx_falls_back_to_a_record_with_opportunistic_tls(dns_server: DnsServer, port: int) -> None:
    dns_server.add("example.net", "A", "127.0.0.31")
    async with receivers(port, "127.0.0.31", tls=server_context("unrelated.test")) as (host,):
        d = deliverer(dns_server, port)
        [result] = await d.deliver("a@example.com", ["bob@example.net"], message())
        await d.pool.close()
    assert result.result is Result.DELIVERED
    [tx] = host.transactions
    assert tx.tls  # offered, so used, although the certificate names another host


async def test_recipients_split_per_domain(dns_server: DnsServer, port: int) -> None:
    dns_server.add("one.test", "MX", "10 mx.one.test.")
    dns_server.add("mx.one.test", "A", "127.0.0.41")
    dns_server.add("two.test", "A", "127.0.0.42")
    async with receivers(port, "127.0.0.41", "127.0.0.42") as (one, two):
        d = deliverer(dns_server, port)
        results = await d.deliver("a@example.com", ["x@one.test", "y@two.test", "z@ONE.test"], message())
        await d.pool.close()
    assert [r.result for r in results] == [Result.DELIVERED] * 3
    assert [t.rcpt_tos for t in one.transactions] == [("x@one.test", "z@ONE.test")]
    assert [t.rcpt_tos for t in two.transactions] == [("y@two.test",)]


async def test_dns_answers_decide_permanent_or_temporary(dns_server: DnsServer, port: int) -> None:
    dns_server.add("null.test", "MX", "0 .")
    dns_server.fail("broken.test")
    d = deliverer(dns_server, port)
    results = await d.deliver("a@example.com", ["a@null.test", "b@missing.test", "c@broken.test"], message())
    assert [(r.result, r.status) for r in results] == [(Result.FAILED, "5.1.10"), (Result.FAILED, "5.1.2"),
                                                      (Result.DEFERRED, "4.4.3")]
