"""A Postfix relaying through the relay: a private instance with ``relayhost`` the relay's submission
port, SASL (a sasl_passwd map with the credential), ``smtp_tls_security_level = encrypt``; the message
goes in through Postfix's ``sendmail`` and must arrive with only Postfix's Received field and the
relay's fields added."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from clientkit import (
    POSTFIX_HOSTNAME,
    POSTFIX_PASSWORD,
    POSTFIX_USER,
    SENDER,
    PrivatePostfix,
    arrival,
    assert_arrived_intact,
    lf,
    message,
    program,
)

pytestmark = [pytest.mark.postfix, pytest.mark.root]


@pytest.fixture
def postfix(request, relay) -> Iterator[PrivatePostfix]:
    """``request.param``: Postfix's ``smtp_sasl_mechanism_filter`` (empty: any mechanism offered)."""
    if os.geteuid() != 0:
        pytest.fail("the private Postfix instance runs as root: run this test as root", pytrace=False)
    program("sendmail", "postfix")
    # not under pytest's tmp_path: its directories are 0700 and Postfix's daemons (user postfix) must
    # walk down to the queue
    root = Path(tempfile.mkdtemp(prefix="mta-clients-postfix-"))
    try:
        instance = PrivatePostfix(root / "postfix", relay, POSTFIX_USER, POSTFIX_PASSWORD,
                                  mechanisms=request.param)
        instance.start()
        try:
            yield instance
        finally:
            instance.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def send_through(postfix: PrivatePostfix, relay, receiver, dns_server, recipient: str,
                 token: str) -> None:
    submitted = message(token, recipient, date_and_id=True)
    postfix.sendmail(SENDER, recipient, lf(submitted))  # a local program hands Postfix Unix text
    outcome = postfix.outcome(recipient)
    assert f"relay=127.0.0.1[127.0.0.1]:{relay.submission_port}" in outcome, outcome
    assert "status=sent" in outcome, outcome
    tx = arrival(receiver, recipient)
    assert tx.mail_from == SENDER
    arrived = assert_arrived_intact(tx, submitted, dns_server, hops=[f"by {POSTFIX_HOSTNAME} (Postfix"])
    # over TLS, with SMTP AUTH, as the credential in Postfix's sasl_passwd map
    assert b" with ESMTPSA " in arrived.received, arrived.received
    assert f"(authenticated as {POSTFIX_USER})".encode() in arrived.received, arrived.received


@pytest.mark.parametrize("postfix", ["plain, login"], indirect=True, ids=["mechanism-filter"])
def test_postfix_relayhost_with_sasl(postfix, relay, receiver, dns_server, recipient, token) -> None:
    send_through(postfix, relay, receiver, dns_server, recipient, token)


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "the relay advertises CRAM-MD5 to every client once any credential opts in; Postfix (Cyrus SASL) "
    "then uses it, and for a PLAIN/LOGIN-only credential the mail is deferred: 'SASL authentication "
    "failed; server 127.0.0.1[127.0.0.1] said: 535 5.7.8 Authentication failed'"))
@pytest.mark.parametrize("postfix", [""], indirect=True, ids=["no-filter"])
def test_postfix_default_mechanisms_with_a_plain_only_credential(postfix, relay, receiver, dns_server,
                                                                  recipient, token) -> None:
    send_through(postfix, relay, receiver, dns_server, recipient, token)
