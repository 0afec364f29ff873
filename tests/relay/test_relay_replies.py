"""Each row of the design's reply table, on each SMTP port, with real clients over real TLS."""

from __future__ import annotations

import smtplib
import ssl

import pytest
from relaykit import PASSWORD, RawSmtp, RelayThread

MESSAGE = b"From: app@example.com\r\nTo: rcpt@example.net\r\nSubject: hi\r\n\r\nhello\r\n"


def _client(relay: RelayThread, port_index: int, tls: ssl.SSLContext, **kw) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", relay.ports[port_index], timeout=10, **kw)
    client.ehlo("client.example")
    client.starttls(context=tls)
    client.ehlo("client.example")
    return client


PORTS = [0, 1, 2]


@pytest.mark.parametrize("port", PORTS)
def test_commands_before_starttls_get_530(relay: RelayThread, port: int) -> None:
    raw = RawSmtp(relay.ports[port])
    assert raw.greeting.startswith("220 mta.test.example")
    ehlo = raw.cmd("EHLO client.example")
    assert "STARTTLS" in ehlo
    assert "AUTH" not in ehlo  # AUTH is advertised only under TLS
    assert raw.cmd("NOOP").startswith("250")
    for command in ("MAIL FROM:<app@example.com>", "RCPT TO:<x@example.net>", "DATA", "AUTH PLAIN AGFwcAB4",
                    "HELO x", "RSET", "VRFY x", "HELP"):
        assert raw.cmd(command) == "530 5.7.0 Must issue a STARTTLS command first", command
    assert raw.cmd("QUIT").startswith("221")


@pytest.mark.parametrize("port", PORTS)
def test_wrong_password_535(relay: RelayThread, tls_client: ssl.SSLContext, port: int) -> None:
    client = _client(relay, port, tls_client)
    with pytest.raises(smtplib.SMTPAuthenticationError) as info:
        client.login("app", "wrong")
    assert info.value.smtp_code == 535
    assert info.value.smtp_error == b"5.7.8 Authentication failed"
    with pytest.raises(smtplib.SMTPAuthenticationError) as info:
        client.login("no-such-user", PASSWORD)
    assert info.value.smtp_error == b"5.7.8 Authentication failed"


@pytest.mark.parametrize("port", PORTS)
def test_right_password_wrong_ip_535(relay: RelayThread, tls_client: ssl.SSLContext, port: int) -> None:
    client = _client(relay, port, tls_client)
    with pytest.raises(smtplib.SMTPAuthenticationError) as info:
        client.login("restricted", PASSWORD)
    assert (info.value.smtp_code, info.value.smtp_error) == (535, b"5.7.8 IP not authorized")
    client.close()
    # and the same credential from an allowed address works
    ok = _client(relay, port, tls_client, source_address=("127.0.0.2", 0))
    assert ok.login("loopback2", PASSWORD)[0] == 235


@pytest.mark.parametrize("port", PORTS)
def test_sender_domain_550(relay: RelayThread, tls_client: ssl.SSLContext, port: int) -> None:
    client = _client(relay, port, tls_client)
    client.login("app", PASSWORD)
    code, text = client.mail("someone@evil.example")
    assert (code, text) == (550, b"5.7.1 [ACL] Sender domain not authorized")


@pytest.mark.parametrize("port", PORTS)
def test_header_domain_550(relay: RelayThread, tls_client: ssl.SSLContext, port: int) -> None:
    client = _client(relay, port, tls_client)
    client.login("app", PASSWORD)
    spoofed = MESSAGE.replace(b"From: app@example.com", b"From: ceo@evil.example")
    with pytest.raises(smtplib.SMTPDataError) as info:
        client.sendmail("app@example.com", ["rcpt@example.net"], spoofed)
    assert (info.value.smtp_code, info.value.smtp_error) == (550, b"5.7.1 From/Sender header not authorized")
    with pytest.raises(smtplib.SMTPDataError):
        client.sendmail("app@example.com", ["rcpt@example.net"],
                        b"Sender: x@evil.example\r\n" + MESSAGE)


@pytest.mark.parametrize("port", PORTS)
def test_quota_452(relay: RelayThread, tls_client: ssl.SSLContext, port: int) -> None:
    client = _client(relay, port, tls_client)
    client.login("quota-two", PASSWORD)
    client.sendmail("app@example.com", ["rcpt@example.net"], MESSAGE)
    client.sendmail("app@example.com", ["rcpt@example.net"], MESSAGE)
    code, text = client.mail("app@example.com")
    assert (code, text) == (452, b"4.7.1 Quota exceeded, try again later")


@pytest.mark.parametrize("port", PORTS)
def test_unauthenticated_rcpt_530(relay: RelayThread, tls_client: ssl.SSLContext, port: int) -> None:
    client = _client(relay, port, tls_client)
    assert client.mail("app@example.com") == (530, b"5.7.0 Authentication required")
    assert client.rcpt("victim@example.net") == (530, b"5.7.0 Authentication required")
    assert client.docmd("DATA") == (530, b"5.7.0 Authentication required")


@pytest.mark.parametrize("port", PORTS)
def test_failed_auth_throttled_then_421(relay: RelayThread, tls_client: ssl.SSLContext, port: int) -> None:
    source = f"127.0.1.{port + 1}"
    raw = RawSmtp(relay.ports[port], source=source)
    raw.starttls(tls_client)
    replies = [raw.auth_plain("app", f"wrong-{i}") for i in range(11)]
    assert replies[:10] == ["535 5.7.8 Authentication failed"] * 10
    assert replies[10] == "421 4.7.0 Too many failed authentications, closing connection"
    assert raw.closed()
    # a new connection from that address is refused at AUTH, even with the right password
    again = RawSmtp(relay.ports[port], source=source)
    again.starttls(tls_client)
    assert again.auth_plain("two-domains", PASSWORD).startswith("421 4.7.0")
    # ... while other addresses are unaffected
    other = RawSmtp(relay.ports[port])
    other.starttls(tls_client)
    assert other.auth_plain("two-domains", PASSWORD).startswith("235")


@pytest.mark.parametrize("port", PORTS)
def test_spool_unwritable_452_and_not_ready(relay: RelayThread, tls_client: ssl.SSLContext,
                                            port: int) -> None:
    spool = relay.relay.spool
    spool.slots.rename(spool.root / "slots.moved")
    spool.slots.write_bytes(b"")  # a file where the directory was: no write can succeed, even as root
    try:
        client = _client(relay, port, tls_client)
        client.login("app", PASSWORD)
        with pytest.raises(smtplib.SMTPDataError) as info:
            client.sendmail("app@example.com", ["rcpt@example.net"], MESSAGE)
        assert (info.value.smtp_code, info.value.smtp_error) == (
            452, b"4.3.1 Insufficient system storage, try again later")
        assert relay.relay.readiness()["spool"] is False
    finally:
        spool.slots.unlink()
        (spool.root / "slots.moved").rename(spool.slots)
    relay.relay.refresh_spool_health()
    assert all(relay.relay.readiness().values())


@pytest.mark.parametrize("port", PORTS)
def test_accepted_message_is_in_spool(relay: RelayThread, tls_client: ssl.SSLContext, port: int) -> None:
    client = _client(relay, port, tls_client)
    client.login("app", PASSWORD)
    client.mail("app@example.com")
    client.rcpt("rcpt@example.net")
    code, text = client.data(MESSAGE)
    assert code == 250
    queue_id = text.decode().rsplit(" ", 1)[1]
    entry = relay.relay.spool.read(queue_id)
    # the client's header fields and body unchanged, under the relay's Received (test_relay_trace_headers)
    head, body = entry.message.split(b"\r\n\r\n", 1)
    assert head.startswith(b"Received: ")
    assert MESSAGE.split(b"\r\n\r\n")[0] in head
    assert body == b"hello\r\n"
    assert entry.envelope.credential == "app"
    assert entry.envelope.rcpts == ("rcpt@example.net",)
