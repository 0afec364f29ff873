"""Helpers for the outbound TLS policy tests: relay settings that trust the test CA (``delivery.tls.caFile``,
the test-only setting), an MX deliverer built the way the relay builds it, and certificates."""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from deliverykit import ca
from mta_relay.config import (
    Delivery,
    DeliveryTls,
    Dns,
    DnssecResolver,
    Queue,
    RelaySettings,
    SmtpListener,
    TlsFiles,
)
from mta_relay.delivery import from_config
from mta_relay.delivery.metrics import DeliveryMetrics
from mta_relay.delivery.pool import ConnectionPool
from mta_relay.delivery.router import Deliverer
from mta_relay.delivery.tls_policy import TlsObserver
from prometheus_client import CollectorRegistry
from support.tls import write_ca_file


def settings(tmp_path: Path, dns: tuple[str, int], policy: str = "Auto",
             dnssec: tuple[str, int] | None = None) -> RelaySettings:
    ca_file = write_ca_file(ca(), tmp_path / "test-ca.pem")
    resolver = DnssecResolver(nameservers=[dnssec[0]], port=dnssec[1], timeout_seconds=2) if dnssec else None
    return RelaySettings(
        hostname="mta.test", smtp_listeners=[SmtpListener(port=2525)],
        tls=TlsFiles(cert_file="unused.crt", key_file="unused.key"),
        dns=Dns(nameservers=[dns[0]], port=dns[1], timeout_seconds=2),
        queue=Queue(path=str(tmp_path / "spool")),
        delivery=Delivery(tls=DeliveryTls(policy=policy, ca_file=str(ca_file), dnssec_resolver=resolver)))


class Mx:
    """A deliverer for MX mode as ``from_config`` builds it, its observer (collecting reports) and
    metrics."""

    def __init__(self, relay: RelaySettings, tmp_path: Path, smtp_port: int, https_port: int = 443) -> None:
        self.registry = CollectorRegistry()
        self.metrics = DeliveryMetrics(self.registry)
        self.observer = TlsObserver(self.metrics.tls)
        self.observer.reports = []
        route = from_config.mx_route_with_tls(relay, tmp_path, self.observer, port=smtp_port,
                                              https_port=https_port)
        self.deliverer = Deliverer(route, ConnectionPool())

    def results(self) -> list[tuple[str, str, str]]:
        """(MX host, policy, result) of every hop reported so far."""
        assert self.observer.reports is not None
        return [(hop.name, str(r.applied), str(r.result)) for hop, r in self.observer.reports]

    def count(self, policy: str, result: str) -> float:
        labels = {"policy": policy, "result": result}
        return self.registry.get_sample_value("mta_delivery_tls_total", labels) or 0


def der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def server_context_from(authority: trustme.CA, tmp_path: Path, *names: str,
                        with_root: bool = False) -> tuple[ssl.SSLContext, list[bytes]]:
    """A server context with a certificate of ``authority`` for ``names`` and the chain it sends (DER,
    its own first); ``with_root`` also sends the CA's certificate (DANE-TA wants it in the chain)."""
    leaf = authority.issue_cert(*names)
    chain = [blob.bytes() for blob in leaf.cert_chain_pems]
    if with_root:
        chain.append(authority.cert_pem.bytes())
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert_file, key_file = tmp_path / f"{names[0]}.crt", tmp_path / f"{names[0]}.key"
    cert_file.write_bytes(b"".join(chain))
    key_file.write_bytes(leaf.private_key_pem.bytes())
    context.load_cert_chain(cert_file, key_file)
    return context, [der(pem) for pem in chain]
