"""MTA-STS against real servers on loopback: the test DNS server publishes ``_mta-sts`` and the MX, a real
HTTPS server serves the policy (certificate from the test CA, which the relay trusts only through
``delivery.tls.caFile``), and real receivers offer STARTTLS with certificates for the right or a wrong
name."""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from deliverykit import client_context, free_port, message, server_context
from mta_relay import state_files
from mta_relay.delivery import mta_sts
from mta_relay.delivery.mx import make_resolver
from mta_relay.delivery.outcome import Result
from mta_relay.delivery.tls_policy import FetchError, StsCache, fetch_policy
from mta_relay.events.classify import classify
from support.dnsserver import DnsServer
from support.mta_sts_server import StsServer
from support.smtp_receiver import SmtpReceiver
from tlskit import Mx, settings

ENFORCE = "version: STSv1\nmode: enforce\nmx: mx.example.org\nmx: *.backup.example.org\nmax_age: 604800\n"
TESTING = ENFORCE.replace("enforce", "testing")


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    with DnsServer() as server:
        server.add("example.org", "MX", "10 mx.example.org.")
        server.add("mx.example.org", "A", "127.0.0.61")
        server.add("_mta-sts.example.org", "TXT", '"v=STSv1; id=20260101"')
        server.add("mta-sts.example.org", "A", "127.0.0.60")
        yield server


@pytest.fixture
def port() -> int:
    return free_port()


async def test_enforce_with_a_valid_certificate_delivers_verified(dns_server: DnsServer, port: int,
                                                                  tmp_path: Path) -> None:
    async with StsServer("127.0.0.60", server_context("mta-sts.example.org")) as sts, \
            SmtpReceiver("127.0.0.61", port, tls=server_context("mx.example.org")) as rx:
        sts.policy = ENFORCE
        mx = Mx(settings(tmp_path, (dns_server.address, dns_server.port)), tmp_path, port, sts.port)
        [result] = await mx.deliverer.deliver("a@example.com", ["bob@example.org"], message())
        await mx.deliverer.pool.close()
    assert result.result is Result.DELIVERED
    assert result.tls_policy == "mta-sts-enforce"
    assert rx.transactions[0].tls
    assert mx.results() == [("mx.example.org", "mta-sts-enforce", "verified")]
    assert mx.count("mta-sts-enforce", "verified") == 1


async def test_enforce_with_a_bad_certificate_defers_and_never_sends_in_plaintext(
        dns_server: DnsServer, port: int, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "mta_relay.delivery.tls")
    async with StsServer("127.0.0.60", server_context("mta-sts.example.org")) as sts, \
            SmtpReceiver("127.0.0.61", port, tls=server_context("mx.wrong-name.test")) as rx:
        sts.policy = ENFORCE
        mx = Mx(settings(tmp_path, (dns_server.address, dns_server.port)), tmp_path, port, sts.port)
        [result] = await mx.deliverer.deliver("a@example.com", ["bob@example.org"], message())
        await mx.deliverer.pool.close()
    assert result.result is Result.DEFERRED
    assert result.text.startswith("4.7.5")
    assert "mta-sts-enforce" in result.text
    assert classify(result.code, result.text).category == "TLSFailure"  # the TransientFailure event's class
    assert rx.transactions == []
    assert rx.mail_commands() == 0
    assert mx.results() == [("mx.example.org", "mta-sts-enforce", "certificate-host-mismatch")]
    assert mx.count("mta-sts-enforce", "certificate-host-mismatch") == 1
    [line] = [r for r in caplog.records if r.getMessage() == "TLS policy check failed"]
    assert line.fields["action"] == "refused"  # type: ignore[attr-defined]


async def test_testing_with_a_bad_certificate_delivers_and_reports_it(
        dns_server: DnsServer, port: int, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "mta_relay.delivery.tls")
    async with StsServer("127.0.0.60", server_context("mta-sts.example.org")) as sts, \
            SmtpReceiver("127.0.0.61", port, tls=server_context("mx.wrong-name.test")) as rx:
        sts.policy = TESTING
        mx = Mx(settings(tmp_path, (dns_server.address, dns_server.port)), tmp_path, port, sts.port)
        [result] = await mx.deliverer.deliver("a@example.com", ["bob@example.org"], message())
        await mx.deliverer.pool.close()
    assert result.result is Result.DELIVERED
    assert result.tls_policy == "mta-sts-testing"
    assert rx.transactions[0].tls  # still encrypted, just not verified
    assert mx.results() == [("mx.example.org", "mta-sts-testing", "certificate-host-mismatch")]
    [line] = [r for r in caplog.records if r.getMessage() == "TLS policy check failed"]
    fields = line.fields  # type: ignore[attr-defined]
    assert (fields["domain"], fields["mx"], fields["result"], fields["starttls"], fields["verified"]) == (
        "example.org", "mx.example.org", "certificate-host-mismatch", True, False)
    assert fields["action"] == "delivered anyway (testing)"


async def test_enforce_skips_mx_hosts_the_policy_does_not_name(dns_server: DnsServer, port: int,
                                                               tmp_path: Path) -> None:
    dns_server.clear("example.org")
    dns_server.add("example.org", "MX", "10 rogue.example.org.", "20 mx1.backup.example.org.")
    dns_server.add("rogue.example.org", "A", "127.0.0.62")
    dns_server.add("mx1.backup.example.org", "A", "127.0.0.63")
    async with StsServer("127.0.0.60", server_context("mta-sts.example.org")) as sts, \
            SmtpReceiver("127.0.0.62", port, tls=server_context("rogue.example.org")) as rogue, \
            SmtpReceiver("127.0.0.63", port, tls=server_context("mx1.backup.example.org")) as backup:
        sts.policy = ENFORCE
        mx = Mx(settings(tmp_path, (dns_server.address, dns_server.port)), tmp_path, port, sts.port)
        [result] = await mx.deliverer.deliver("a@example.com", ["bob@example.org"], message())
        await mx.deliverer.pool.close()
    assert result.result is Result.DELIVERED
    assert result.remote == "mx1.backup.example.org"
    assert rogue.connections == []
    assert len(backup.transactions) == 1
    assert ("rogue.example.org", "mta-sts-enforce", "mx-not-in-policy") in mx.results()


async def test_policy_is_cached_kept_when_the_txt_record_and_https_go_away_and_survives_a_restart(
        dns_server: DnsServer, port: int, tmp_path: Path) -> None:
    relay = settings(tmp_path, (dns_server.address, dns_server.port))
    async with StsServer("127.0.0.60", server_context("mta-sts.example.org")) as sts, \
            SmtpReceiver("127.0.0.61", port, tls=server_context("mx.wrong-name.test")) as rx:
        sts.policy = ENFORCE
        mx = Mx(relay, tmp_path, port, sts.port)
        for _ in range(2):
            [result] = await mx.deliverer.deliver("a@example.com", ["bob@example.org"], message())
            assert result.result is Result.DEFERRED
        assert sts.requests == 1  # same id: the cached policy, no second fetch
        # An attacker strips the TXT record and blocks HTTPS: the cached policy still holds.
        dns_server.clear("_mta-sts.example.org")
        sts.status = 404
        [result] = await mx.deliverer.deliver("a@example.com", ["bob@example.org"], message())
        assert result.result is Result.DEFERRED
        assert rx.transactions == []
        # A new id whose policy cannot be fetched: the cached one stays in force.
        dns_server.add("_mta-sts.example.org", "TXT", '"v=STSv1; id=20260202"')
        [result] = await mx.deliverer.deliver("a@example.com", ["bob@example.org"], message())
        assert result.result is Result.DEFERRED
        assert sts.requests == 2
        assert mx.count("mta-sts", "sts-policy-fetch-error") == 1
        await mx.deliverer.pool.close()
    cache_file = state_files.state_dir(tmp_path / "spool") / mta_sts.CACHE_FILE
    await StsCache.at(cache_file).flush()
    restarted = StsCache(cache_file)  # what a restarted delivery process reads
    await restarted.load()
    cached = restarted.policies["example.org"]
    assert (cached.id, cached.policy.mode) == ("20260101", mta_sts.Mode.ENFORCE)
    assert cached.fresh(time.time())
    assert oct(cache_file.stat().st_mode & 0o777) == "0o600"


async def test_no_policy_means_opportunistic(dns_server: DnsServer, port: int, tmp_path: Path) -> None:
    dns_server.clear("_mta-sts.example.org")
    async with SmtpReceiver("127.0.0.61", port, tls=server_context("mx.wrong-name.test")) as rx:
        mx = Mx(settings(tmp_path, (dns_server.address, dns_server.port)), tmp_path, port)
        [result] = await mx.deliverer.deliver("a@example.com", ["bob@example.org"], message())
        await mx.deliverer.pool.close()
    assert (result.result, result.tls_policy) == (Result.DELIVERED, "opportunistic")
    assert rx.transactions[0].tls
    assert mx.results() == [("mx.example.org", "opportunistic", "unverified")]


@pytest.mark.parametrize(("status", "content_type", "body", "expected"), [
    (301, "text/plain", ENFORCE, "sts-policy-fetch-error"),  # redirects are not followed
    (200, "text/html", ENFORCE, "sts-policy-invalid"),
    (200, "text/plain", ENFORCE + "x: " + "y" * (64 * 1024), "sts-policy-invalid"),  # over 64 KB
    (200, "text/plain", "version: STSv1\nmode: enforce\n", "sts-policy-invalid"),
])
async def test_policy_fetch_limits(dns_server: DnsServer, status: int, content_type: str, body: str,
                                   expected: str) -> None:
    async with StsServer("127.0.0.60", server_context("mta-sts.example.org")) as sts:
        sts.policy, sts.status, sts.content_type = body, status, content_type
        with pytest.raises(FetchError) as error:
            await fetch_policy("example.org", make_resolver([dns_server.address], dns_server.port, 2),
                               client_context(), sts.port)
    assert error.value.result == expected


async def test_policy_host_certificate_is_verified(dns_server: DnsServer) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("mta-sts.example.org").configure_cert(context)  # not the CA the relay trusts
    async with StsServer("127.0.0.60", context) as sts:
        sts.policy = ENFORCE
        with pytest.raises(FetchError) as error:
            await fetch_policy("example.org", make_resolver([dns_server.address], dns_server.port, 2),
                               client_context(), sts.port)
    assert error.value.result == "sts-webpki-invalid"

