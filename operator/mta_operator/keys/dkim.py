"""DKIM key pairs: generation (once per domain) and the public TXT value derived from the private key."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mta_operator.api import DkimAlgorithm


def generate(algorithm: DkimAlgorithm, key_size: int) -> str:
    """A new private key as PKCS#8 PEM (what the relay's signer loads)."""
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if algorithm == DkimAlgorithm.ED25519:
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def algorithm_of(private_pem: str) -> DkimAlgorithm | None:
    """The algorithm of a stored key; None when it is neither RSA nor Ed25519 (or unreadable)."""
    try:
        key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    except (ValueError, TypeError):
        return None
    if isinstance(key, rsa.RSAPrivateKey):
        return DkimAlgorithm.RSA
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return DkimAlgorithm.ED25519
    return None


def txt_value(private_pem: str) -> str:
    """``v=DKIM1; k=...; p=...`` (RFC 6376 / RFC 8463) for the key's public half."""
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
    if isinstance(key, rsa.RSAPrivateKey):
        der = key.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"
    raise ValueError("DKIM key is neither RSA nor Ed25519")
