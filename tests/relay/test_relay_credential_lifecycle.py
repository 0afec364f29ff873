"""A credential's lifecycle as the relay enforces it, over real SMTP (smtplib) and HTTP Basic: during a
rotation both passwords work; a previous password stops at its ``notAfter`` by the relay's own clock
(no reload, no operator); a suspended credential is refused with its own reply at AUTH, at HTTP Basic and,
for SourceIP, at MAIL, and each refusal is a Rejection event carrying the reason."""

from __future__ import annotations

import datetime as dt
import json
import smtplib
import ssl
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import RelaySetup
from mta_relay import replies
from mta_relay.events.record import Event, EventType
from mta_relay.passwords import fast_verifier
from relaykit import PASSWORD, RelayThread, https, password_credential

OLD = "Old-" + "o" * 28
MESSAGE = b"From: app@example.com\r\nTo: rcpt@example.net\r\nSubject: hi\r\n\r\nhello\r\n"


def _at(seconds: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).isoformat()


def _previous(password: str, seconds: float) -> dict[str, Any]:
    return {"verifier": fast_verifier(password), "notAfter": _at(seconds)}


class Events:
    """Stands in for the relay's event sink: what was emitted, in order."""

    def __init__(self) -> None:
        self.emitted: list[Event] = []

    def emit(self, event: Event) -> None:
        self.emitted.append(event)

    def rejections(self) -> list[tuple[str, str, str]]:
        return [(e.credential, e.reception_protocol, e.reason) for e in self.emitted
                if e.type == EventType.REJECTION]


@pytest.fixture
def lifecycle(relay_setup: RelaySetup) -> Iterator[tuple[RelayThread, Events]]:
    relay_setup.credentials += [
        password_credential("rotating", PASSWORD, previousVerifiers=[_previous(OLD, 3600)]),
        password_credential("expired", PASSWORD, previousVerifiers=[_previous(OLD, -1)]),
        password_credential("paused", PASSWORD, suspended=True, previousVerifiers=[_previous(OLD, 3600)]),
        {"username": "paused-by-ip", "authentication": "SourceIP", "allowedIPs": ["127.0.0.4/32"],
         "suspended": True, "domains": {"mode": "Specific", "names": ["example.com"]}},
    ]
    relay_setup.write()
    thread = RelayThread(relay_setup.config_dir).start()
    events = Events()
    thread.relay.events = events
    try:
        yield thread, events
    finally:
        thread.stop()


def _smtp(relay: RelayThread, tls: ssl.SSLContext, source: str = "127.0.0.1") -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", relay.ports[1], timeout=10, source_address=(source, 0))
    client.starttls(context=tls)
    client.ehlo("client.example")
    return client


def _login(relay: RelayThread, tls: ssl.SSLContext, username: str, password: str) -> tuple[int, bytes]:
    with _smtp(relay, tls) as client:
        try:
            code, text = client.login(username, password)
        except smtplib.SMTPAuthenticationError as error:
            return error.smtp_code, error.smtp_error
        client.sendmail("app@example.com", ["rcpt@example.net"], MESSAGE)  # and the session sends
        return code, text


def _inject(relay: RelayThread, tls: ssl.SSLContext, username: str | None, password: str | None,
            source: str = "127.0.0.1") -> tuple[int, str]:
    body = json.dumps({"envelope_sender": "app@example.com", "recipients": ["r@example.net"],
                       "content": "From: app@example.com\r\nSubject: x\r\n\r\nx\r\n"}).encode()
    status, _, data = https(relay.server.http_port, tls, "/api/inject/v1", method="POST", body=body,
                            user=username, password=password, source=source)
    return status, json.loads(data).get("reason", "")


def test_both_passwords_work_during_the_grace_period(lifecycle: tuple[RelayThread, Events],
                                                     tls_client: ssl.SSLContext) -> None:
    relay, _ = lifecycle
    for password in (PASSWORD, OLD):
        assert _login(relay, tls_client, "rotating", password)[0] == 235
        assert _inject(relay, tls_client, "rotating", password)[0] == 200
    neither = "neither-" + "x" * 24
    assert _login(relay, tls_client, "rotating", neither) == (535, b"5.7.8 Authentication failed")


def test_an_expired_password_is_refused_by_the_relay_clock(lifecycle: tuple[RelayThread, Events],
                                                          tls_client: ssl.SSLContext) -> None:
    relay, _ = lifecycle
    assert _login(relay, tls_client, "expired", OLD) == (535, b"5.7.8 Authentication failed")
    assert _inject(relay, tls_client, "expired", OLD) == (401, replies.AUTH_FAILED.reason)
    assert _login(relay, tls_client, "expired", PASSWORD)[0] == 235


def test_a_previous_password_stops_at_not_after_without_a_reload(
        relay_setup: RelaySetup, tls_client: ssl.SSLContext) -> None:
    """The table keeps listing the old verifier (the operator may be down): the clock alone retires it."""
    not_after = time.time() + 6
    until = dt.datetime.fromtimestamp(not_after, dt.UTC).isoformat()
    relay_setup.credentials.append(password_credential("expiring", PASSWORD, previousVerifiers=[
        {"verifier": fast_verifier(OLD), "notAfter": until}]))
    relay_setup.write()
    relay = RelayThread(relay_setup.config_dir).start()
    try:
        assert _login(relay, tls_client, "expiring", OLD)[0] == 235
        time.sleep(max(0.0, not_after - time.time()) + 0.1)
        assert _login(relay, tls_client, "expiring", OLD) == (535, b"5.7.8 Authentication failed")
        assert _inject(relay, tls_client, "expiring", OLD) == (401, replies.AUTH_FAILED.reason)
        assert _login(relay, tls_client, "expiring", PASSWORD)[0] == 235
    finally:
        relay.stop()


def test_a_suspended_credential_gets_its_own_reply_over_smtp_and_http(
        lifecycle: tuple[RelayThread, Events], tls_client: ssl.SSLContext) -> None:
    relay, events = lifecycle
    suspended = (replies.CREDENTIAL_SUSPENDED.code,
                 f"{replies.CREDENTIAL_SUSPENDED.enhanced} {replies.CREDENTIAL_SUSPENDED.text}".encode())
    for password in (PASSWORD, OLD):  # every password of it
        assert _login(relay, tls_client, "paused", password) == suspended
        assert _inject(relay, tls_client, "paused", password) == (403, replies.CREDENTIAL_SUSPENDED.reason)
    # A wrong password learns nothing about the account: the usual 535.
    assert _login(relay, tls_client, "paused", "wrong-" + "x" * 26) == (535, b"5.7.8 Authentication failed")
    # SourceIP: refused at MAIL over SMTP, and over HTTP without a header.
    with _smtp(relay, tls_client, source="127.0.0.4") as client:
        assert client.mail("app@example.com") == suspended
    assert _inject(relay, tls_client, None, None, source="127.0.0.4") == (
        403, replies.CREDENTIAL_SUSPENDED.reason)
    reason = replies.CREDENTIAL_SUSPENDED.reason
    # (smtplib tries PLAIN, then LOGIN: each refused AUTH is one event)
    assert set(events.rejections()) == {("paused", "SMTP", reason), ("paused", "HTTP", reason),
                                        ("paused-by-ip", "SMTP", reason), ("paused-by-ip", "HTTP", reason)}


def test_suspension_reaches_an_open_session_at_its_next_transaction(
        relay_setup: RelaySetup, tls_client: ssl.SSLContext) -> None:
    """As a deletion does: the table is looked up again at every MAIL."""
    relay = RelayThread(relay_setup.config_dir).start()
    try:
        with _smtp(relay, tls_client) as client:
            assert client.login("app", PASSWORD)[0] == 235
            client.sendmail("app@example.com", ["rcpt@example.net"], MESSAGE)
            for cred in relay_setup.credentials:
                if cred["username"] == "app":
                    cred["suspended"] = True
            relay_setup.write()
            deadline = time.monotonic() + 10
            while (reply := client.mail("app@example.com"))[0] == 250 and time.monotonic() < deadline:
                client.rset()
                time.sleep(0.1)
            assert reply == (525, b"5.7.13 " + replies.CREDENTIAL_SUSPENDED.text.encode())
    finally:
        relay.stop()
