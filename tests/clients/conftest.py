"""Clients tier: real mail clients — curl, swaks, Python's smtplib, Nodemailer, a Postfix relaying with
SASL, and curl on the HTTP injection API — each send the same hard message (an 8-bit UTF-8 part, a
150 KB base64 attachment, lines that start with a dot) through a real ``mta-relay`` process (STARTTLS
ports, an implicit-TLS port, HTTPS, DKIM) to a real receiving SMTP server reached as the relay's
smarthost over verified TLS; each test shows the message arrived byte for byte as the client put it on
the wire, plus only the fields the relay adds, with a DKIM signature that verifies.

A missing client fails its test naming the package to install (CI installs them); nothing skips.
Markers: ``swaks``, ``node`` (Nodemailer, through npm), ``postfix`` and ``root`` (the private Postfix
instance runs as root), so that ``-m "not root"`` picks what runs unprivileged.
"""

from __future__ import annotations

import hashlib
import re
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from clientkit import Relay, dkim_key, publish_dkim
from support.dnsserver import DnsServer
from support.receiver_thread import ThreadedReceiver
from support.tls import make_ca


def pytest_configure(config: pytest.Config) -> None:
    for name, what in (("root", "runs as root (a private Postfix instance)"),
                       ("postfix", "needs Postfix (Debian package postfix)"),
                       ("node", "needs node and npm (Nodemailer from tests/clients/node)"),
                       ("swaks", "needs swaks (Debian package swaks and its Perl TLS/SASL modules)")):
        config.addinivalue_line("markers", f"{name}: {what}")


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return make_ca()


@pytest.fixture(scope="session")
def dns_server() -> Iterator[DnsServer]:
    with DnsServer() as server:
        yield server


@pytest.fixture(scope="session")
def receiver(ca: trustme.CA) -> Iterator[ThreadedReceiver]:
    """The smarthost: STARTTLS required, with a certificate the relay verifies against the test CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    with ThreadedReceiver(tls=context, require_tls=True) as rx:
        yield rx


@pytest.fixture(scope="session")
def relay(tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA, dns_server: DnsServer,
          receiver: ThreadedReceiver) -> Iterator[Relay]:
    pem, txt = dkim_key()
    publish_dkim(dns_server, txt)
    running = Relay(tmp_path_factory.mktemp("relay"), ca, receiver.port, pem).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def recipient(request: pytest.FixtureRequest) -> str:
    """An address of this test's own, so that its message is told apart at the receiver."""
    name = request.node.name.lower().removeprefix("test_clients_").removeprefix("test_")
    token = re.sub(r"[^a-z0-9]+", "-", name).strip("-")[:30].strip("-")
    digest = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:6]  # short lines: nothing re-folds
    return f"{token}-{digest}@example.net"


@pytest.fixture
def token(recipient: str) -> str:
    return recipient.split("@")[0]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
