"""Real TLS for tests: a trustme CA, server certificate files for the relay, client contexts."""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme

DEFAULT_NAMES = ("mta.test.example", "localhost", "127.0.0.1", "::1")


def make_ca() -> trustme.CA:
    return trustme.CA()


def write_server_cert(ca: trustme.CA, directory: Path, names: tuple[str, ...] = DEFAULT_NAMES
                      ) -> tuple[Path, Path]:
    """PEM files as a kubernetes.io/tls Secret mounts them: tls.crt (chain) and tls.key."""
    directory.mkdir(parents=True, exist_ok=True)
    cert = ca.issue_cert(*names)
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert.private_key_pem.write_to_path(str(key_path))
    cert_path.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    return cert_path, key_path


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    """A verifying client context that trusts only the test CA."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def write_ca_file(ca: trustme.CA, path: Path) -> Path:
    ca.cert_pem.write_to_path(str(path))
    return path
