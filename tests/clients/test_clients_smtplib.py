"""Python's smtplib: STARTTLS, AUTH, ``send_message`` of a parsed message, as an application does."""

from __future__ import annotations

import email
import email.policy
import smtplib

import pytest
from clientkit import APP_PASSWORD, APP_USER, SENDER, arrival, assert_arrived_intact, message


@pytest.mark.parametrize("date_and_id", [True, False], ids=["with-date-and-id", "without"])
def test_smtplib_starttls_send_message(relay, receiver, dns_server, recipient, token, date_and_id) -> None:
    raw = message(token, recipient, date_and_id=date_and_id)
    parsed = email.message_from_bytes(raw, policy=email.policy.SMTP)
    # send_message flattens the parsed message again: that flattening is what goes on the wire
    wire = parsed.as_bytes(policy=email.policy.SMTP)
    assert wire == raw, "the email package re-wrote the message: the test message needs fixing"
    with smtplib.SMTP("127.0.0.1", relay.submission_port, timeout=30) as smtp:
        smtp.starttls(context=relay.client_tls)
        smtp.login(APP_USER, APP_PASSWORD)
        refused = smtp.send_message(parsed, from_addr=SENDER, to_addrs=[recipient])
    assert refused == {}
    assert_arrived_intact(arrival(receiver, recipient), wire, dns_server)
