"""What TLS one next hop must have, and what it had: the policy's requirement (``HopTls``, decided by
``tls_policy`` before connecting) and the outcome (``TlsReport``, made by ``client`` after STARTTLS).

The policy names are the ones logs, events (``tls_policy``) and the metric ``mta_delivery_tls_total``
carry. Failure results use the result types of SMTP TLS Reporting (RFC 8460 §4.3) where one fits, so a
log line reads like a TLSRPT failure detail.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from enum import StrEnum

from mta_relay.delivery.dane import Tlsa


class Applied(StrEnum):
    """The TLS policy applied to a hop."""

    NONE = "none"  # no STARTTLS (a route set to None)
    OPPORTUNISTIC = "opportunistic"  # STARTTLS when offered, unverified (RFC 7435)
    REQUIRED = "required"  # STARTTLS with a PKIX-valid certificate for the host name (a route, a smarthost)
    MTA_STS_ENFORCE = "mta-sts-enforce"
    MTA_STS_TESTING = "mta-sts-testing"
    DANE = "dane"


class Result(StrEnum):
    VERIFIED = "verified"  # authenticated: PKIX or DANE
    UNVERIFIED = "unverified"  # encrypted, not authenticated
    PLAINTEXT = "plaintext"  # no TLS, and the policy allowed that
    # failures (RFC 8460 result types, and two of our own for checks made before connecting)
    STARTTLS_NOT_SUPPORTED = "starttls-not-supported"
    CERTIFICATE_HOST_MISMATCH = "certificate-host-mismatch"
    CERTIFICATE_EXPIRED = "certificate-expired"
    CERTIFICATE_NOT_TRUSTED = "certificate-not-trusted"
    VALIDATION_FAILURE = "validation-failure"  # the TLS handshake failed otherwise
    TLSA_INVALID = "tlsa-invalid"  # DANE: no TLSA record matches the server's chain
    DNSSEC_INVALID = "dnssec-invalid"  # DANE: the TLSA lookup failed (bogus, or no answer)
    MX_NOT_IN_POLICY = "mx-not-in-policy"  # MTA-STS: the MX host is not one the policy names

    @property
    def failed(self) -> bool:
        return self not in (Result.VERIFIED, Result.UNVERIFIED, Result.PLAINTEXT)


@dataclass(frozen=True)
class HopTls:
    """The requirement for one hop. ``tlsa``: the DNSSEC-validated TLSA records (DANE); ``names``: the
    reference identifiers a DANE-TA chain may name (the MX host, the destination domain); ``domain``:
    the destination, for reports."""

    applied: Applied
    tlsa: tuple[Tlsa, ...] = ()
    names: tuple[str, ...] = ()
    domain: str = ""

    @property
    def requires_tls(self) -> bool:
        return self.applied in (Applied.REQUIRED, Applied.MTA_STS_ENFORCE, Applied.DANE)

    @property
    def pkix(self) -> bool:
        """The certificate must be PKIX-valid for the host name (enforced, or checked and reported)."""
        return self.applied in (Applied.REQUIRED, Applied.MTA_STS_ENFORCE, Applied.MTA_STS_TESTING)


@dataclass(frozen=True)
class TlsReport:
    """What one hop's TLS came to. ``offered``: the host offered STARTTLS (or TLS from the first byte).
    A failed result under MTA-STS testing is reported and the hop used all the same."""

    applied: Applied
    result: Result
    offered: bool
    detail: str = ""

    @property
    def verified(self) -> bool:
        return self.result is Result.VERIFIED


def verify_failure(error: ssl.SSLCertVerificationError) -> Result:
    """The RFC 8460 result type of a failed PKIX check."""
    code = getattr(error, "verify_code", 0)
    if code == 62:  # X509_V_ERR_HOSTNAME_MISMATCH
        return Result.CERTIFICATE_HOST_MISMATCH
    if code == 10:  # X509_V_ERR_CERT_HAS_EXPIRED
        return Result.CERTIFICATE_EXPIRED
    return Result.CERTIFICATE_NOT_TRUSTED
