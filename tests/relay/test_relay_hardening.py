"""Hardening: SMTP smuggling, STARTTLS command injection, line and size limits, SMTPUTF8, timeouts and
connection limits — all with raw bytes over real sockets and real TLS."""

from __future__ import annotations

import socket
import ssl
import time

import pytest
from conftest import RelaySetup
from mta_relay.replies import BARE_LINE_END
from relaykit import PASSWORD, RawSmtp, RelayThread

SMUGGLING = [b"\n.\n", b"\r.\r", b"\r.\n", b"\n.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\r\n.\r",
             b"\r\n\x00.\r\n"]
SECOND = (b"MAIL FROM:<app@example.com>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\n"
          b"From: app@example.com\r\nSubject: smuggled\r\n\r\nsmuggled\r\n.\r\n")


def _session(relay: RelayThread, tls: ssl.SSLContext, port: int = 0) -> RawSmtp:
    raw = RawSmtp(relay.ports[port])
    raw.starttls(tls)
    assert raw.auth_plain("app", PASSWORD).startswith("235")
    return raw


def _start_data(raw: RawSmtp) -> None:
    assert raw.cmd("MAIL FROM:<app@example.com>").startswith("250")
    assert raw.cmd("RCPT TO:<rcpt@example.net>").startswith("250")
    assert raw.cmd("DATA").startswith("354")


@pytest.mark.parametrize("sequence", SMUGGLING, ids=[s.decode("latin-1").encode("unicode_escape").decode()
                                                     for s in SMUGGLING])
def test_smuggling_never_yields_two_messages(relay: RelayThread, tls_client: ssl.SSLContext,
                                             sequence: bytes) -> None:
    raw = _session(relay, tls_client)
    _start_data(raw)
    raw.send(b"From: app@example.com\r\nSubject: first\r\n\r\nfirst" + sequence + SECOND + b"QUIT\r\n")
    replies = []
    while reply := raw.reply():
        replies.append(reply)
    assert replies[0] == BARE_LINE_END.smtp
    assert relay.relay.spool.queue_ids() == []


def test_well_formed_pipelining_still_gives_two_messages(relay: RelayThread,
                                                        tls_client: ssl.SSLContext) -> None:
    """The control for the test above: the guard refuses smuggling, not pipelining."""
    raw = _session(relay, tls_client)
    _start_data(raw)
    raw.send(b"From: app@example.com\r\nSubject: first\r\n\r\nfirst\r\n.\r\n" + SECOND)
    replies = [raw.reply() for _ in range(5)]
    assert [r[:3] for r in replies] == ["250", "250", "250", "354", "250"]
    assert len(relay.relay.spool.queue_ids()) == 2


@pytest.mark.parametrize("line", [b"NOOP\n", b"NOOP\rNOOP\r\n", b"NO\rOP\r\n", b"EHLO a\nb\r\n",
                                  b"NOOP\x00\r\n"])
def test_bare_line_ends_in_commands_refused(relay: RelayThread, line: bytes) -> None:
    raw = RawSmtp(relay.ports[1])
    raw.send(line)
    assert raw.reply().startswith("521 5.5.2")
    assert raw.closed()


def test_starttls_injection_gets_no_reply_inside_tls(relay: RelayThread, tls_client: ssl.SSLContext) -> None:
    raw = RawSmtp(relay.ports[0])
    assert raw.cmd("EHLO client.example").startswith("250")
    raw.send(b"STARTTLS\r\nEHLO injected.example\r\n")  # one packet
    assert raw.reply().startswith("220")
    raw.sock = tls_client.wrap_socket(raw.sock, server_hostname="mta.test.example")
    raw.sock.settimeout(0.5)
    with pytest.raises(TimeoutError):
        raw.sock.recv(1)  # the injected EHLO must not be answered
    raw.sock.settimeout(10)
    assert raw.cmd("MAIL FROM:<a@example.com>") == "503 5.5.1 Send EHLO first"  # no EHLO took effect
    assert "250-AUTH " in raw.cmd("EHLO client.example")


def test_command_line_limit(relay: RelayThread, tls_client: ssl.SSLContext) -> None:
    raw = _session(relay, tls_client)
    assert raw.cmd(b"NOOP " + b"x" * 2000).startswith("500")
    assert raw.cmd("NOOP").startswith("250")  # the session survives a long line


def test_text_line_limit_998(relay: RelayThread, tls_client: ssl.SSLContext) -> None:
    raw = _session(relay, tls_client)
    _start_data(raw)
    raw.send(b"From: app@example.com\r\n\r\n" + b"x" * 1200 + b"\r\n.\r\n")
    assert raw.reply().startswith("500")
    assert relay.relay.spool.queue_ids() == []
    _start_data(raw)
    raw.send(b"From: app@example.com\r\n\r\n" + b"x" * 998 + b"\r\n.\r\n")
    assert raw.reply().startswith("250")


def test_size_advertised_and_enforced(relay: RelayThread, tls_client: ssl.SSLContext) -> None:
    raw = RawSmtp(relay.ports[2])
    raw.starttls(tls_client, ehlo=True)
    assert "250-SIZE 65536" in raw.cmd("EHLO client.example")
    assert raw.auth_plain("app", PASSWORD).startswith("235")
    assert raw.cmd("MAIL FROM:<app@example.com> SIZE=70000") == "552 5.3.4 Message size exceeds fixed limit"
    _start_data(raw)
    body = b"From: app@example.com\r\n\r\n" + (b"y" * 900 + b"\r\n") * 80
    raw.send(body + b".\r\n")
    assert raw.reply() == "552 5.3.4 Message size exceeds fixed limit"
    assert relay.relay.spool.queue_ids() == []


def test_smtputf8_rules(relay: RelayThread, tls_client: ssl.SSLContext) -> None:
    raw = _session(relay, tls_client)
    assert "SMTPUTF8" in raw.cmd("EHLO client.example")
    assert raw.auth_plain("app", PASSWORD).startswith(("235", "503"))
    assert raw.cmd("MAIL FROM:<jörg@example.com>".encode()).startswith("553 5.6.7")
    assert raw.cmd("MAIL FROM:<jörg@example.com> SMTPUTF8".encode()).startswith("250")
    assert raw.cmd("RCPT TO:<zoë@example.net>".encode()).startswith("250")
    assert raw.cmd("RSET").startswith("250")
    assert raw.cmd("MAIL FROM:<app@example.com>").startswith("250")
    assert raw.cmd("RCPT TO:<zoë@example.net>".encode()).startswith("553 5.6.7")


def test_connection_limit_per_ip(relay: RelayThread) -> None:
    held = [RawSmtp(relay.ports[0], source="127.0.2.1") for _ in range(20)]
    assert all(c.greeting.startswith("220") for c in held)
    over = RawSmtp(relay.ports[1], source="127.0.2.1")
    assert over.greeting == "421 4.7.0 Too many connections from your address"
    assert RawSmtp(relay.ports[1], source="127.0.2.2").greeting.startswith("220")
    held[0].cmd("QUIT")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if RawSmtp(relay.ports[1], source="127.0.2.1").greeting.startswith("220"):
            break
        time.sleep(0.05)
    else:
        pytest.fail("a closed connection was not given back to its address")


def test_idle_timeout(relay_setup: RelaySetup) -> None:
    relay_setup.settings["limits"]["idleTimeoutSeconds"] = 0.5
    relay_setup.write()
    thread = RelayThread(relay_setup.config_dir).start()
    try:
        raw = RawSmtp(thread.ports[0])
        raw.sock.settimeout(5)
        started = time.monotonic()
        assert raw.closed()
        assert time.monotonic() - started < 4
    finally:
        thread.stop()


def test_tls_handshake_garbage_does_not_hurt_the_server(relay: RelayThread,
                                                        tls_client: ssl.SSLContext) -> None:
    sock = socket.create_connection(("127.0.0.1", relay.ports[0]), timeout=5)
    sock.recv(1024)
    sock.sendall(b"STARTTLS\r\n")
    sock.recv(1024)
    sock.sendall(b"\x16\x03\x01\x00\x05garbage-not-tls" * 4)
    sock.close()
    assert _session(relay, tls_client).cmd("NOOP").startswith("250")
