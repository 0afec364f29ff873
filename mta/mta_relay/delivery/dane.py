"""DANE for SMTP (RFC 7672), the pure part: which TLSA records are usable and whether a server's
certificate chain matches them. No sockets; ``tls_policy`` looks the records up (and decides whether
they are DNSSEC-validated), ``client`` hands over the chain the server sent.

Usable records (§3.1): DANE-EE(3) and DANE-TA(2), selector Cert(0) or SPKI(1), matching Full(0),
SHA2-256(1) or SHA2-512(2). PKIX-TA(0) and PKIX-EE(1) are unusable for SMTP.

- DANE-EE(3): the server's own certificate (or its public key) matches; no name, validity-period or
  chain check (§3.1.1).
- DANE-TA(2): a certificate the server sent (not its own) matches and is a trust anchor the server's
  certificate chains to, valid at ``now``, for one of the reference names: the MX host name or the
  destination domain (§3.2.2). The trust anchor must be in the chain the server sends (§3.1.2 asks
  servers to include it), so a record of selector SPKI naming a key that is nowhere in the chain does
  not match. The chain is checked with cryptography's path validation (``x509.verification``), the CA
  certificates under its Web PKI profile; of the server's certificate only a subjectAltName naming the
  host is required (a private CA behind DANE-TA need not issue certificates to the CA/Browser Forum's
  profile, e.g. a critical subjectAltName).
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import verification

DANE_TA, DANE_EE = 2, 3
CERT, SPKI = 0, 1
FULL, SHA256, SHA512 = 0, 1, 2


@dataclass(frozen=True)
class Tlsa:
    usage: int
    selector: int
    mtype: int
    data: bytes

    @property
    def usable(self) -> bool:
        return self.usage in (DANE_TA, DANE_EE) and self.selector in (CERT, SPKI) \
            and self.mtype in (FULL, SHA256, SHA512)

    def __str__(self) -> str:
        return f"{self.usage} {self.selector} {self.mtype} {self.data.hex()[:16]}"


@dataclass(frozen=True)
class Match:
    ok: bool
    detail: str  # what matched, or why nothing did (for logs; no certificate content)


def usable(records: list[Tlsa]) -> list[Tlsa]:
    return [r for r in records if r.usable]


def _selected(cert: x509.Certificate, der: bytes, selector: int) -> bytes:
    if selector == CERT:
        return der
    return cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)


def _digest(data: bytes, mtype: int) -> bytes:
    if mtype == SHA256:
        return hashlib.sha256(data).digest()
    if mtype == SHA512:
        return hashlib.sha512(data).digest()
    return data


def matches(record: Tlsa, der: bytes) -> bool:
    """Whether one certificate (DER) matches one record's selector and matching type."""
    try:
        cert = x509.load_der_x509_certificate(der)
        selected = _selected(cert, der, record.selector)
    except ValueError:
        return False
    return _digest(selected, record.mtype) == record.data


def association(usage: int, selector: int, mtype: int, der: bytes) -> Tlsa:
    """The TLSA record for a certificate (DER): what a domain would publish. For tests and tooling."""
    cert = x509.load_der_x509_certificate(der)
    return Tlsa(usage, selector, mtype, _digest(_selected(cert, der, selector), mtype))


def check_chain(records: list[Tlsa], chain: list[bytes], names: list[str],
                now: datetime.datetime | None = None) -> Match:
    """Whether the chain the server sent (DER, its own certificate first) matches any usable record.
    ``names``: the reference identifiers for DANE-TA (MX host name, destination domain)."""
    if not chain:
        return Match(False, "the server sent no certificate")
    candidates = usable(records)
    if not candidates:
        return Match(False, "no usable TLSA record")
    for record in candidates:
        if record.usage == DANE_EE and matches(record, chain[0]):
            return Match(True, f"DANE-EE {record.selector} {record.mtype}")
    for record in candidates:
        if record.usage != DANE_TA:
            continue
        for position, der in enumerate(chain[1:], start=1):
            if matches(record, der) and _chains_to(chain, position, names, now):
                return Match(True, f"DANE-TA {record.selector} {record.mtype}")
    return Match(False, "no TLSA record matches the certificate chain")


def _chains_to(chain: list[bytes], anchor: int, names: list[str], now: datetime.datetime | None) -> bool:
    """The server's certificate chains to ``chain[anchor]`` through the certificates between, is valid
    at ``now`` and names one of ``names``."""
    try:
        certs = [x509.load_der_x509_certificate(der) for der in chain[:anchor + 1]]
    except ValueError:
        return False
    store = verification.Store([certs[anchor]])
    when = now or datetime.datetime.now(datetime.UTC)
    server = verification.ExtensionPolicy.permit_all().require_present(
        x509.SubjectAlternativeName, verification.Criticality.AGNOSTIC, None)
    builder = verification.PolicyBuilder().store(store).time(when).extension_policies(
        ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(), ee_policy=server)
    for name in names:
        try:
            verifier = builder.build_server_verifier(x509.DNSName(name))
            verifier.verify(certs[0], certs[1:anchor])
        except (verification.VerificationError, ValueError):
            continue
        return True
    return False
