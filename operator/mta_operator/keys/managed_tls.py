"""The operator-managed CA and serving certificate (used when a Cluster names neither a TLS Secret nor a
cert-manager issuer). Pure: PEM in, decisions and new PEM out; the caller stores them in Secrets."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_LIFETIME = dt.timedelta(days=3650)
SERVING_LIFETIME = dt.timedelta(days=90)
RENEW_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True)
class Pair:
    cert_pem: str
    key_pem: str


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def new_ca(common_name: str, now: dt.datetime) -> Pair:
    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return Pair(cert.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(key))


def issue(ca: Pair, hostname: str, now: dt.datetime) -> Pair:
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.encode())
    ca_key = serialization.load_pem_private_key(ca.key_pem.encode(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = _key()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + SERVING_LIFETIME)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return Pair(cert.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(key))


def needs_new_ca(ca: Pair | None, now: dt.datetime) -> bool:
    if ca is None:
        return True
    try:
        cert = x509.load_pem_x509_certificate(ca.cert_pem.encode())
    except ValueError:
        return True
    return cert.not_valid_after_utc - now < RENEW_BEFORE * 12


def needs_reissue(serving: Pair | None, ca: Pair, hostname: str, now: dt.datetime) -> bool:
    """Missing, unreadable, for another name, from another CA, or within RENEW_BEFORE of expiry."""
    if serving is None:
        return True
    try:
        cert = x509.load_pem_x509_certificate(serving.cert_pem.encode())
        ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.encode())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return True
    return (cert.issuer != ca_cert.subject or hostname not in names.get_values_for_type(x509.DNSName)
            or cert.not_valid_after_utc - now < RENEW_BEFORE)
