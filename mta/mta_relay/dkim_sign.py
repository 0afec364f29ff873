"""DKIM signing (dkimpy) with the key of the message's From domain.

Keys come from the relay's config files as PEM (PKCS#1 or PKCS#8, RSA or Ed25519); they are converted
once to the forms dkimpy wants. A message whose From domain (or a parent domain) has no key goes out
unsigned. Sign the exact bytes that will be sent: callers pass CRLF-normalized messages.
"""

from __future__ import annotations

import base64
import email.utils
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mta_relay.header_fields import header_values

DEFAULT_HEADERS: tuple[str, ...] = (
    "from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc", "mime-version",
    "content-type", "content-transfer-encoding", "in-reply-to", "references", "list-unsubscribe",
)


@dataclass(frozen=True)
class DkimKey:
    """One domain's signing key as configured."""

    domain: str
    selector: str
    private_key_pem: bytes = b""

    def __repr__(self) -> str:  # keep the key out of logs and tracebacks
        return f"DkimKey(domain={self.domain!r}, selector={self.selector!r})"


@dataclass(frozen=True)
class _Prepared:
    selector: bytes
    domain: bytes
    key: bytes
    algorithm: bytes


def _prepare(key: DkimKey) -> _Prepared:
    domain = key.domain.lower().rstrip(".").encode()
    loaded = serialization.load_pem_private_key(key.private_key_pem, password=None)
    if isinstance(loaded, rsa.RSAPrivateKey):
        pkcs1 = loaded.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.TraditionalOpenSSL,
                                     serialization.NoEncryption())
        return _Prepared(key.selector.encode(), domain, pkcs1, b"rsa-sha256")
    if isinstance(loaded, ed25519.Ed25519PrivateKey):
        raw = loaded.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                   serialization.NoEncryption())
        return _Prepared(key.selector.encode(), domain, base64.b64encode(raw), b"ed25519-sha256")
    raise ValueError(f"DKIM key for {key.domain}: only RSA and Ed25519 keys are supported")


def from_domain(message: bytes) -> str | None:
    """The domain of the (first) From header address, lower case; None when there is none."""
    addresses = email.utils.getaddresses(header_values(message, "from")["from"])
    for _name, address in addresses:
        if "@" in address:
            return address.rsplit("@", 1)[1].strip().rstrip(".").lower() or None
    return None


class DkimSigner:
    """Signs with the key of the From domain, or of its closest parent domain that has one."""

    def __init__(self, keys: Iterable[DkimKey], headers: Sequence[str] = DEFAULT_HEADERS) -> None:
        self._keys: Mapping[str, _Prepared] = {k.domain.lower().rstrip("."): _prepare(k) for k in keys}
        self._headers = [h.lower().encode() for h in headers]

    @property
    def has_keys(self) -> bool:
        return bool(self._keys)

    def key_for(self, domain: str) -> _Prepared | None:
        labels = domain.split(".")
        for i in range(len(labels) - 1):
            found = self._keys.get(".".join(labels[i:]))
            if found:
                return found
        return None

    def sign(self, message: bytes) -> bytes:
        """``message`` with a DKIM-Signature header in front, or unchanged when no key applies."""
        if not self._keys:
            return message  # no key can apply: skip parsing the headers
        domain = from_domain(message)
        key = self.key_for(domain) if domain else None
        if key is None:
            return message
        # dkimpy is unannotated; sign returns the DKIM-Signature field as bytes
        signature: bytes = dkim.sign(message, key.selector, key.domain, key.key,
                                     signature_algorithm=key.algorithm, canonicalize=(b"relaxed", b"relaxed"),
                                     include_headers=self._headers)
        return signature + message
