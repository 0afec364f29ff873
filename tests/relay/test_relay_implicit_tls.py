"""Implicit TLS (RFC 8314) listeners with real clients (smtplib.SMTP_SSL, openssl s_client), and a TLS
ClientHello sent to a STARTTLS port: closed, counted under its own reason, not as smuggling."""

from __future__ import annotations

import base64
import smtplib
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from conftest import RelaySetup
from relaykit import PASSWORD, RelayThread
from support.tls import write_ca_file

MESSAGE = b"From: app@example.com\r\nTo: r@example.net\r\nSubject: implicit\r\n\r\nbody\r\n"


@pytest.fixture
def tls_relay(relay_setup: RelaySetup) -> Iterator[RelayThread]:
    """Port index 0: STARTTLS; index 1: implicit TLS."""
    relay_setup.settings["smtpListeners"] = [{"port": 0, "address": "127.0.0.1"},
                                             {"port": 0, "address": "127.0.0.1", "implicitTls": True}]
    relay_setup.write()
    thread = RelayThread(relay_setup.config_dir).start()
    try:
        yield thread
    finally:
        thread.stop()


def _metric(relay: RelayThread, name: str, **labels: str) -> float:
    return relay.relay.metrics.registry.get_sample_value(name, labels) or 0.0


def test_smtp_ssl_submits_with_auth_at_once(tls_relay: RelayThread, tls_client: ssl.SSLContext) -> None:
    with smtplib.SMTP_SSL("127.0.0.1", tls_relay.ports[1], context=tls_client, timeout=10) as client:
        code, ehlo = client.ehlo("client.example")
        assert code == 250
        assert b"\nAUTH " in ehlo  # offered from the first EHLO: TLS is on
        assert b"STARTTLS" not in ehlo
        assert client.docmd("STARTTLS") == (554, b"5.5.1 TLS already active on this port")
        assert client.mail("app@example.com") == (530, b"5.7.0 Authentication required")
        client.login("app", PASSWORD)
        client.mail("app@example.com")
        client.rcpt("r@example.net")
        code, text = client.data(MESSAGE)
    assert code == 250, text
    spooled = tls_relay.relay.spool.read(text.decode().rsplit(" ", 1)[1]).message
    assert spooled.startswith(b"Received: from client.example ([127.0.0.1])\r\n\tby mta.test.example with "
                              b"ESMTPSA id ")


def test_plaintext_on_the_implicit_port_gets_nothing(tls_relay: RelayThread) -> None:
    with socket.create_connection(("127.0.0.1", tls_relay.ports[1]), timeout=10) as sock:
        sock.sendall(b"EHLO client.example\r\n")
        assert sock.recv(100) == b""  # the TLS handshake failed; no SMTP greeting was ever sent


def test_openssl_s_client(tls_relay: RelayThread, ca: trustme.CA, tmp_path: Path) -> None:
    ca_pem = str(write_ca_file(ca, tmp_path / "ca.pem"))
    blob = base64.b64encode(f"\0app\0{PASSWORD}".encode()).decode()
    script = f"EHLO openssl.example\r\nAUTH PLAIN {blob}\r\nQUIT\r\n"
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{tls_relay.ports[1]}", "-CAfile", ca_pem,
         "-verify_return_error", "-servername", "mta.test.example", "-quiet", "-crlf"],
        input=script.replace("\r\n", "\n"), capture_output=True, text=True, timeout=30, check=False)
    assert "220 mta.test.example ESMTP" in result.stdout, result.stderr
    assert "235 2.7.0 Authentication successful" in result.stdout
    assert "STARTTLS" not in result.stdout


def test_tls_client_hello_on_starttls_port_is_closed_not_smuggling(tls_relay: RelayThread,
                                                                   tls_client: ssl.SSLContext) -> None:
    # the greeting arrives first; an implicit-TLS client ignores it and starts its handshake
    with (socket.create_connection(("127.0.0.1", tls_relay.ports[0]), timeout=10) as raw,
          pytest.raises((ssl.SSLError, ConnectionError))):
        tls_client.wrap_socket(raw, server_hostname="mta.test.example")
    with socket.create_connection(("127.0.0.1", tls_relay.ports[0]), timeout=10) as raw:
        raw.recv(1000)  # the greeting, read this time: the hello goes out as the first client bytes
        with pytest.raises((ssl.SSLError, ConnectionError)):
            tls_client.wrap_socket(raw, server_hostname="mta.test.example")
    assert _metric(tls_relay, "mta_smtp_connections_refused_total", reason="tls_on_starttls_port") == 2
    assert _metric(tls_relay, "mta_messages_rejected_total", source="smtp", reason="bare_line_end") == 0


def test_starttls_port_still_works_after(tls_relay: RelayThread, tls_client: ssl.SSLContext) -> None:
    with smtplib.SMTP("127.0.0.1", tls_relay.ports[0], timeout=10) as client:
        client.starttls(context=tls_client)
        assert client.login("app", PASSWORD)[0] == 235
