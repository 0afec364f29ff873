"""DANE against real servers on loopback: the zone is signed with DNSSEC (``support.dnssec``), a validating
resolver checks its signatures against the zone's trust anchor and sets AD (the relay trusts that bit
only from ``delivery.tls.dnssecResolver``), and receivers offer STARTTLS with certificates from a CA the
relay does not trust at all (DANE does not need the Web PKI)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from deliverykit import free_port, message, server_context
from mta_relay.delivery import dane
from mta_relay.delivery.client import HopPolicy, TlsMode, open_session, peer_chain
from mta_relay.delivery.mx import Hop
from mta_relay.delivery.outcome import Result
from support.dnssec import SignedZone, ValidatingResolver
from support.dnsserver import DnsServer
from support.mta_sts_server import StsServer
from support.smtp_receiver import SmtpReceiver
from tlskit import Mx, server_context_from, settings


@pytest.fixture
def dns_servers() -> Iterator[tuple[DnsServer, ValidatingResolver]]:
    with DnsServer() as authoritative, ValidatingResolver(authoritative) as validating:
        yield authoritative, validating


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def private_ca() -> trustme.CA:
    return trustme.CA()  # the receivers' CA: never trusted by the relay


def zone_with(tlsa: str) -> SignedZone:
    zone = SignedZone("example.net")
    zone.add("example.net.", "MX", "10 mx.example.net.")
    zone.add("mx.example.net.", "A", "127.0.0.71")
    zone.add("_25._tcp.mx.example.net.", "TLSA", tlsa)
    return zone


def tlsa_text(record: dane.Tlsa) -> str:
    return f"{record.usage} {record.selector} {record.mtype} {record.data.hex()}"


def mx_for(tmp_path: Path, validating: ValidatingResolver, port: int, https_port: int = 443) -> Mx:
    # The validating resolver answers every look-up, as a resolver sidecar would in a pod.
    where = (validating.address, validating.port)
    return Mx(settings(tmp_path, where, dnssec=where), tmp_path, port, https_port)


@pytest.mark.parametrize(("usage", "selector", "mtype"), [(3, 1, 1), (3, 0, 2), (2, 0, 1), (2, 1, 2)])
async def test_matching_tlsa_delivers(dns_servers: tuple[DnsServer, ValidatingResolver], port: int,
                                      tmp_path: Path, private_ca: trustme.CA, usage: int, selector: int,
                                      mtype: int) -> None:
    authoritative, validating = dns_servers
    context, chain = server_context_from(private_ca, tmp_path, "mx.example.net", with_root=True)
    zone = zone_with(tlsa_text(dane.association(usage, selector, mtype, chain[0 if usage == 3 else -1])))
    zone.publish(authoritative)
    validating.trust(zone)
    async with SmtpReceiver("127.0.0.71", port, tls=context) as rx:
        mx = mx_for(tmp_path, validating, port)
        [result] = await mx.deliverer.deliver("a@example.com", ["bob@example.net"], message())
        await mx.deliverer.pool.close()
    assert (result.result, result.tls_policy) == (Result.DELIVERED, "dane")
    assert rx.transactions[0].tls
    assert mx.results() == [("mx.example.net", "dane", "verified")]
    assert mx.count("dane", "verified") == 1


async def test_mismatching_tlsa_defers(dns_servers: tuple[DnsServer, ValidatingResolver], port: int,
                                       tmp_path: Path, private_ca: trustme.CA) -> None:
    authoritative, validating = dns_servers
    context, _chain = server_context_from(private_ca, tmp_path, "mx.example.net")
    _other, other_chain = server_context_from(private_ca, tmp_path, "other.example.net")
    zone = zone_with(tlsa_text(dane.association(3, 1, 1, other_chain[0])))
    zone.publish(authoritative)
    validating.trust(zone)
    async with SmtpReceiver("127.0.0.71", port, tls=context) as rx:
        mx = mx_for(tmp_path, validating, port)
        [result] = await mx.deliverer.deliver("a@example.com", ["bob@example.net"], message())
        await mx.deliverer.pool.close()
    assert result.result is Result.DEFERRED
    assert result.text.startswith("4.7.5")
    assert rx.transactions == []
    assert rx.mail_commands() == 0
    assert mx.results() == [("mx.example.net", "dane", "tlsa-invalid")]


async def test_dane_requires_starttls(dns_servers: tuple[DnsServer, ValidatingResolver], port: int,
                                      tmp_path: Path, private_ca: trustme.CA) -> None:
    authoritative, validating = dns_servers
    _context, chain = server_context_from(private_ca, tmp_path, "mx.example.net")
    zone = zone_with(tlsa_text(dane.association(3, 1, 1, chain[0])))
    zone.publish(authoritative)
    validating.trust(zone)
    async with SmtpReceiver("127.0.0.71", port) as rx:  # no STARTTLS offered
        mx = mx_for(tmp_path, validating, port)
        [result] = await mx.deliverer.deliver("a@example.com", ["bob@example.net"], message())
        await mx.deliverer.pool.close()
    assert result.result is Result.DEFERRED
    assert rx.transactions == []
    assert mx.results() == [("mx.example.net", "dane", "starttls-not-supported")]


async def test_unsigned_tlsa_is_ignored(dns_servers: tuple[DnsServer, ValidatingResolver], port: int,
                                        tmp_path: Path, private_ca: trustme.CA) -> None:
    """The MX RRset is validated, but the MX host lives in an unsigned zone: its TLSA records (which
    would not match) are insecure, so DANE does not apply and the hop is opportunistic."""
    authoritative, validating = dns_servers
    context, _chain = server_context_from(private_ca, tmp_path, "mx.hosting.test")
    _other, other_chain = server_context_from(private_ca, tmp_path, "other.hosting.test")
    zone = SignedZone("example.net")
    zone.add("example.net.", "MX", "10 mx.hosting.test.")
    zone.publish(authoritative)
    validating.trust(zone)
    authoritative.add("mx.hosting.test", "A", "127.0.0.71")  # unsigned
    mismatching = tlsa_text(dane.association(3, 1, 1, other_chain[0]))
    authoritative.add("_25._tcp.mx.hosting.test", "TLSA", mismatching)
    async with SmtpReceiver("127.0.0.71", port, tls=context) as rx:
        mx = mx_for(tmp_path, validating, port)
        [result] = await mx.deliverer.deliver("a@example.com", ["bob@example.net"], message())
        await mx.deliverer.pool.close()
    assert (result.result, result.tls_policy) == (Result.DELIVERED, "opportunistic")
    assert rx.transactions[0].tls
    assert ("_25._tcp.mx.hosting.test", "TLSA") in validating.queries  # looked up, then ignored


async def test_tlsa_of_an_unvalidated_mx_is_not_looked_up(dns_servers: tuple[DnsServer, ValidatingResolver],
                                                          port: int, tmp_path: Path,
                                                          private_ca: trustme.CA) -> None:
    """Without a validated MX RRset an attacker could have chosen the host (and its TLSA records)."""
    authoritative, validating = dns_servers
    context, _chain = server_context_from(private_ca, tmp_path, "mx.example.net")
    zone_with("3 1 1 " + "00" * 32).publish(authoritative)  # signed, but no trust anchor: insecure
    async with SmtpReceiver("127.0.0.71", port, tls=context) as rx:
        mx = mx_for(tmp_path, validating, port)
        [result] = await mx.deliverer.deliver("a@example.com", ["bob@example.net"], message())
        await mx.deliverer.pool.close()
    assert (result.result, result.tls_policy) == (Result.DELIVERED, "opportunistic")
    assert len(rx.transactions) == 1
    assert ("_25._tcp.mx.example.net", "TLSA") not in validating.queries


async def test_bogus_tlsa_is_not_used_and_that_host_is_not_tried(
        dns_servers: tuple[DnsServer, ValidatingResolver], port: int, tmp_path: Path,
        private_ca: trustme.CA) -> None:
    """Bogus signatures: the validating resolver answers SERVFAIL, and RFC 7672 §2.2 makes that MX host
    unusable: neither DANE from forged records nor a quiet fall-back to unauthenticated TLS."""
    authoritative, validating = dns_servers
    context, chain = server_context_from(private_ca, tmp_path, "mx.example.net")
    zone = zone_with(tlsa_text(dane.association(3, 1, 1, chain[0])))  # signed: the real record
    forged = tlsa_text(dane.Tlsa(3, 1, 1, bytes(32)))
    zone.publish(authoritative, bogus={("_25._tcp.mx.example.net", "TLSA"): forged})
    validating.trust(zone)
    async with SmtpReceiver("127.0.0.71", port, tls=context) as rx:
        mx = mx_for(tmp_path, validating, port)
        [result] = await mx.deliverer.deliver("a@example.com", ["bob@example.net"], message())
        await mx.deliverer.pool.close()
    assert result.result is Result.DEFERRED
    assert result.text.startswith("4.7.5")
    assert rx.connections == []
    assert mx.results() == [("mx.example.net", "dane", "dnssec-invalid")]


async def test_dane_takes_precedence_over_mta_sts(dns_servers: tuple[DnsServer, ValidatingResolver],
                                                  port: int, tmp_path: Path, private_ca: trustme.CA) -> None:
    """The domain's MTA-STS policy (enforce) would refuse this MX (not named, and a certificate the Web
    PKI does not know), but the host has validated TLSA records: DANE decides, and they match."""
    authoritative, validating = dns_servers
    context, chain = server_context_from(private_ca, tmp_path, "mx.example.net")
    zone = zone_with(tlsa_text(dane.association(3, 1, 1, chain[0])))
    zone.add("_mta-sts.example.net.", "TXT", '"v=STSv1; id=1"')
    zone.add("mta-sts.example.net.", "A", "127.0.0.70")
    zone.publish(authoritative)
    validating.trust(zone)
    async with StsServer("127.0.0.70", server_context("mta-sts.example.net")) as sts, \
            SmtpReceiver("127.0.0.71", port, tls=context) as rx:
        sts.policy = "version: STSv1\nmode: enforce\nmx: other.example.net\nmax_age: 86400\n"
        mx = mx_for(tmp_path, validating, port, sts.port)
        [result] = await mx.deliverer.deliver("a@example.com", ["bob@example.net"], message())
        await mx.deliverer.pool.close()
    assert (result.result, result.tls_policy) == (Result.DELIVERED, "dane")
    assert len(rx.transactions) == 1


async def test_peer_chain_reads_the_chain_the_server_sent(tmp_path: Path, private_ca: trustme.CA) -> None:
    """``client.peer_chain`` uses a private call of the ssl module before Python 3.13: pinned here."""
    context, chain = server_context_from(private_ca, tmp_path, "mx.example.net", with_root=True)
    async with SmtpReceiver(tls=context) as rx:
        smtp = await open_session(Hop("mx.example.net", "127.0.0.1"),
                                  HopPolicy("mta.test", rx.port, TlsMode.OPPORTUNISTIC, connect_timeout=5))
        assert peer_chain(smtp) == chain
        smtp.close()
