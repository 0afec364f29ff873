"""DKIM signing with the From domain's key, verified by dkimpy against the published public key."""

from __future__ import annotations

import dkim
import pytest
from deliverykit import ed25519_key, message, rsa_key
from mta_relay.dkim_sign import DkimKey, DkimSigner, from_domain


def _verify(signed: bytes, records: dict[bytes, bytes]) -> bool:
    return dkim.verify(signed, dnsfunc=lambda name, timeout=5: records.get(name))


@pytest.mark.parametrize("keygen", [rsa_key, ed25519_key], ids=["rsa", "ed25519"])
def test_signature_verifies_with_published_key(keygen) -> None:
    pem, txt = keygen()
    signer = DkimSigner([DkimKey("example.com", "mta1", pem)])
    original = message(sender="app@example.com")
    signed = signer.sign(original)
    assert signed.endswith(original)  # only a header in front; the rest is byte-identical
    assert signed.startswith(b"DKIM-Signature:")
    assert b"d=example.com" in signed
    assert b"s=mta1" in signed
    assert _verify(signed, {b"mta1._domainkey.example.com.": txt})
    tampered = signed.replace(b"see you", b"see me")
    assert not _verify(tampered, {b"mta1._domainkey.example.com.": txt})


def test_subdomain_uses_closest_parent_key_and_others_go_unsigned() -> None:
    pem, txt = rsa_key()
    signer = DkimSigner([DkimKey("Example.COM", "s1", pem)])
    signed = signer.sign(message(sender="app@mail.example.com"))
    assert b"d=example.com" in signed
    assert _verify(signed, {b"s1._domainkey.example.com.": txt})
    other = message(sender="app@example.org")
    assert signer.sign(other) == other


def test_signed_headers_are_configurable() -> None:
    pem, _txt = rsa_key()
    signed = DkimSigner([DkimKey("example.com", "s1", pem)], headers=["From", "Subject"]).sign(message())
    h_tag = signed.split(b"h=", 1)[1].split(b";", 1)[0]
    assert b"".join(h_tag.split()).lower() == b"from:subject"


def test_from_domain_parsing() -> None:
    assert from_domain(b'From: "Doe, J" <j@Example.COM>\r\n\r\n') == "example.com"
    assert from_domain(b"Subject: x\r\n\r\n") is None


def test_key_never_in_repr() -> None:
    pem, _txt = rsa_key()
    assert "PRIVATE" not in repr(DkimKey("example.com", "s1", pem))
