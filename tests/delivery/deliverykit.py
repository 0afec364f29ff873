"""Helpers for delivery tests: TLS material (trustme), DKIM keys, free ports, messages."""

from __future__ import annotations

import base64
import functools
import ssl

import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from support.ports import free_port as free_port  # re-exported for the tests


@functools.cache
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(*hostnames: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca().issue_cert(*hostnames).configure_cert(context)
    return context


def client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca().configure_trust(context)
    return context


@functools.cache
def rsa_key() -> tuple[bytes, bytes]:
    """(PKCS#8 PEM private key, DKIM TXT record value) of a 2048-bit RSA key, one per test session."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return pem, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def ed25519_key() -> tuple[bytes, bytes]:
    key = ed25519.Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return pem, b"v=DKIM1; k=ed25519; p=" + base64.b64encode(public)


def message(sender: str = "app@example.com", to: str = "bob@example.net", subject: str = "Hello",
            body: bytes = b"Hi Bob,\r\nsee you.\r\n") -> bytes:
    return (f"From: App <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
            "Date: Sun, 22 Nov 2026 03:00:00 +0000\r\nMessage-ID: <m1@example.com>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n").encode() + body
