"""A throwaway CA and one server certificate (trustme), as PEM files that every peer reads."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

SERVER_NAME = "localhost"


@dataclass(frozen=True)
class CertFiles:
    ca: Path
    cert_chain: Path
    key: Path

    def client_context(self) -> ssl.SSLContext:
        """What the load generator uses: verifies the server against the bench CA, like a real client."""
        return ssl.create_default_context(cafile=str(self.ca))


def write_certs(directory: Path) -> CertFiles:
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    server = ca.issue_cert(SERVER_NAME, "127.0.0.1")
    files = CertFiles(directory / "ca.pem", directory / "server-chain.pem", directory / "server-key.pem")
    ca.cert_pem.write_to_path(str(files.ca))
    server.private_key_pem.write_to_path(str(files.key))
    files.key.chmod(0o600)
    with files.cert_chain.open("wb") as chain:
        for blob in server.cert_chain_pems:
            chain.write(blob.bytes())
    return files
