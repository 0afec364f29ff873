"""Trace and standard header fields: the pure function (``trace_headers``) and what a real SMTP session
leaves in the spool, with the client's address shown and hidden."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from email import message_from_bytes
from email.policy import default
from email.utils import format_datetime

import pytest
from conftest import RelaySetup
from mta_relay.header_fields import header_end
from mta_relay.trace_headers import Arrival, address_literal, smtp_protocol, stamp
from relaykit import PASSWORD, RelayThread

WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
ARRIVAL = Arrival(protocol="ESMTPSA", client_ip="192.0.2.7", credential="billing", helo="client.example")


def _stamp(message: bytes, arrival: Arrival = ARRIVAL, shown: bool = True) -> bytes:
    return stamp(message, arrival, hostname="mta.test.example", queue_id="0123abc", when=WHEN,
                 client_address_shown=shown)


def test_received_field_exact_bytes() -> None:
    message = b"From: a@example.com\r\nDate: x\r\nMessage-ID: <m@x>\r\n\r\nbody\r\n"
    assert _stamp(message) == (
        b"Received: from client.example ([192.0.2.7])\r\n"
        b"\tby mta.test.example with ESMTPSA id 0123abc\r\n"
        b"\t(authenticated as billing);\r\n"
        b"\tFri, 02 Jan 2026 03:04:05 +0000\r\n" + message)


def test_client_address_hidden_leaves_out_the_from_clause() -> None:
    stamped = _stamp(b"Date: x\r\nMessage-ID: <m@x>\r\n\r\nb\r\n", shown=False)
    assert stamped.startswith(b"Received: by mta.test.example with ESMTPSA id 0123abc\r\n")
    assert b"192.0.2.7" not in stamped
    assert b"client.example" not in stamped
    assert b"(authenticated as billing)" in stamped


@pytest.mark.parametrize(("kwargs", "keyword"), [
    ({"tls": True, "smtp_auth": True}, "ESMTPSA"), ({"tls": True, "smtp_auth": False}, "ESMTPS"),
    ({"tls": False, "smtp_auth": True}, "ESMTPA"), ({"tls": False, "smtp_auth": False}, "ESMTP"),
    ({"tls": False, "smtp_auth": False, "extended": False}, "SMTP"),
    ({"tls": True, "smtp_auth": True, "smtputf8": True}, "UTF8SMTPSA")])
def test_with_keywords(kwargs: dict[str, bool], keyword: str) -> None:
    assert smtp_protocol(**kwargs) == keyword


@pytest.mark.parametrize(("ip", "literal"), [("192.0.2.1", "[192.0.2.1]"),
                                              ("2001:db8::1", "[IPv6:2001:db8::1]"),
                                              ("::ffff:192.0.2.1", "[192.0.2.1]")])
def test_address_literals(ip: str, literal: str) -> None:
    assert address_literal(ip) == literal


@pytest.mark.parametrize("helo", ["bad name", "x(y)", "a;b", None, "x" * 300])
def test_unusable_helo_gives_the_address_literal(helo: str | None) -> None:
    stamped = _stamp(b"Date: x\r\nMessage-ID: <m@x>\r\n\r\n", Arrival("ESMTPSA", "192.0.2.7", "b", helo))
    assert stamped.startswith(b"Received: from [192.0.2.7] ([192.0.2.7])\r\n")


def test_source_ip_credential_is_named_as_such() -> None:
    arrival = Arrival("ESMTPS", "192.0.2.7", "by-ip", "h.example", by_address=True)
    assert b"(authenticated by source address as by-ip);" in _stamp(b"Date: x\r\nMessage-ID: <m@x>\r\n\r\n",
                                                                     arrival)


@pytest.mark.parametrize(("message", "head", "rest"), [
    (b"From: a@example.com\r\nSubject: s\r\n\r\nbody\r\n.x\r\n", b"From: a@example.com\r\nSubject: s\r\n",
     b"\r\nbody\r\n.x\r\n"),
    (b"Subject: folded\r\n continued\r\n\r\n", b"Subject: folded\r\n continued\r\n", b"\r\n"),
    (b"\r\nno header at all\r\n", b"", b"\r\nno header at all\r\n"),
    (b"Subject: no body\r\n", b"Subject: no body\r\n", b""),
    (b"Subject: s\r\nnot a field\r\nX: y\r\n\r\n", b"Subject: s\r\n", b"not a field\r\nX: y\r\n\r\n"),
])
def test_missing_date_and_message_id_go_at_the_end_of_the_header_section(message: bytes, head: bytes,
                                                                         rest: bytes) -> None:
    assert header_end(message) == len(head)
    stamped = _stamp(message)
    added = b"Date: Fri, 02 Jan 2026 03:04:05 +0000\r\nMessage-ID: <0123abc@mta.test.example>\r\n"
    assert stamped.endswith(head + added + rest)  # every original byte kept, in order
    assert stamped.startswith(b"Received: ")


def test_present_date_and_message_id_are_kept_and_not_doubled() -> None:
    message = b"date: Thu, 1 Jan 2026 00:00:00 +0000\r\nMESSAGE-ID: <own@app>\r\n\r\nb\r\n"
    stamped = _stamp(message)
    parsed = message_from_bytes(stamped, policy=default)
    assert parsed.get_all("Date") == ["Thu, 01 Jan 2026 00:00:00 +0000"]
    assert parsed.get_all("Message-ID") == ["<own@app>"]


def test_dates_follow_the_second_and_the_zone_of_each_message() -> None:
    """The date text is kept for the last second asked for: never for another second or zone."""
    message = b"From: a@example.com\r\n\r\nbody\r\n"
    minus5 = timezone(timedelta(hours=-5))
    whens = [WHEN, WHEN.replace(microsecond=999_999), WHEN + timedelta(seconds=1), WHEN.astimezone(minus5),
             WHEN]
    dates = [stamp(message, ARRIVAL, hostname="h.example", queue_id="0123abc", when=when).split(b"\r\n")[3]
             for when in whens]
    assert dates == [b"\t" + format_datetime(when.replace(microsecond=0)).encode() for when in whens]
    assert dates[0] == dates[1] != dates[2]
    assert dates[3].endswith(b"-0500")


def test_unterminated_single_header_line_is_ended_before_ours() -> None:
    stamped = _stamp(b"Subject: s")
    assert stamped.endswith(b"Subject: s\r\nDate: Fri, 02 Jan 2026 03:04:05 +0000\r\n"
                            b"Message-ID: <0123abc@mta.test.example>\r\n")


# --- through a real SMTP session -----------------------------------------------------------------------
MESSAGE = b"From: app@example.com\r\nTo: r@example.net\r\nSubject: trace\r\n\r\nbody line\r\n..dot\r\n"


def _send(relay: RelayThread, tls: ssl.SSLContext, user: str = "app") -> bytes:
    with smtplib.SMTP("127.0.0.1", relay.ports[0], timeout=10) as client:
        client.ehlo("client.example")
        client.starttls(context=tls)
        client.ehlo("client.example")
        client.login(user, PASSWORD)
        client.mail("app@example.com")
        client.rcpt("r@example.net")
        code, text = client.data(MESSAGE)
    assert code == 250, text
    return relay.relay.spool.read(text.decode().rsplit(" ", 1)[1]).message


def test_spooled_message_over_smtp(relay: RelayThread, tls_client: ssl.SSLContext) -> None:
    spooled = _send(relay, tls_client)
    queue_id = relay.relay.spool.queue_ids()[0]
    received, rest = spooled.split(b"\r\nFrom: app@example.com\r\n", 1)
    assert received.startswith(b"Received: from client.example ([127.0.0.1])\r\n"
                               b"\tby mta.test.example with ESMTPSA id " + queue_id.encode() + b"\r\n"
                               b"\t(authenticated as app);\r\n\t")
    assert PASSWORD.encode() not in spooled
    parsed = message_from_bytes(spooled, policy=default)
    assert parsed["Message-ID"] == f"<{queue_id}@mta.test.example>"
    assert parsed["Date"].datetime is not None
    # the body exactly as the client's message had it (smtplib's transparency dot removed by SMTP)
    assert spooled.endswith(b"\r\n\r\nbody line\r\n..dot\r\n")
    assert rest.startswith(b"To: r@example.net\r\nSubject: trace\r\nDate: ")


@pytest.fixture
def hidden_relay(relay_setup: RelaySetup) -> Iterator[RelayThread]:
    relay_setup.settings["trace"] = {"clientAddress": False}
    relay_setup.write()
    thread = RelayThread(relay_setup.config_dir).start()
    try:
        yield thread
    finally:
        thread.stop()


def test_client_address_hidden_over_smtp(hidden_relay: RelayThread, tls_client: ssl.SSLContext) -> None:
    spooled = _send(hidden_relay, tls_client)
    assert spooled.startswith(b"Received: by mta.test.example with ESMTPSA id ")
    head = spooled.split(b"\r\n\r\n", 1)[0]
    assert b"127.0.0.1" not in head
    assert b"client.example" not in head
