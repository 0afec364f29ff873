"""Smarthost `tls` from a Cluster manifest to the wire: rendered by the operator's code, served by the real
relay, received by the real test receiver, which records whether the hop used TLS."""

from __future__ import annotations

import ssl
from pathlib import Path

from localkit import (
    Served,
    cluster,
    credential,
    domain,
    generated_passwords,
    message,
    serving,
    write_manifests,
)
from support.receiver_thread import ThreadedReceiver
from support.tls import make_ca


def _manifests(tmp_path: Path, receiver_port: int, tls: str) -> Path:
    return write_manifests(tmp_path / "manifests", cluster(delivery={
        "mode": "Smarthost", "smarthost": {"host": "127.0.0.1", "port": receiver_port, "tls": tls}}),
        domain(), credential("app"))


def _submit(served: Served, text: str) -> None:
    client = served.connect()
    client.login("app", generated_passwords(served.header)["app"])
    client.sendmail("app@example.com", ["someone@example.net"],
                    message("app@example.com", "someone@example.net", text))
    client.quit()


def test_opportunistic_delivers_in_plaintext_when_the_smarthost_offers_no_starttls(tmp_path: Path) -> None:
    with ThreadedReceiver() as receiver, serving(  # no TLS context: STARTTLS is not offered
            _manifests(tmp_path, receiver.port, "Opportunistic"), tmp_path / "state") as served:
        _submit(served, "opportunistic, plaintext hop")
        (delivered,) = receiver.wait_for(1, within=30)
    assert delivered.tls is False
    assert b"opportunistic, plaintext hop" in delivered.data


def test_opportunistic_uses_starttls_when_offered_without_verifying(tmp_path: Path) -> None:
    # The relay does not trust this CA (no SSL_CERT_FILE): Opportunistic encrypts without verifying.
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    make_ca().issue_cert("127.0.0.1").configure_cert(context)
    with ThreadedReceiver(tls=context) as receiver, serving(
            _manifests(tmp_path, receiver.port, "Opportunistic"), tmp_path / "state") as served:
        _submit(served, "opportunistic, TLS hop")
        (delivered,) = receiver.wait_for(1, within=30)
    assert delivered.tls is True
    assert b"opportunistic, TLS hop" in delivered.data


def test_required_never_falls_back_to_plaintext(tmp_path: Path) -> None:
    """The contrast that gives the plaintext test its meaning: Required defers rather than send in clear."""
    with ThreadedReceiver() as receiver:
        with serving(_manifests(tmp_path, receiver.port, "Required"), tmp_path / "state") as served:
            _submit(served, "required")
            served.wait_for_log('"event": "deferred"')
            assert "does not offer STARTTLS" in served.log.read_text()
        assert receiver.receiver.mail_commands() == 0
        assert not receiver.transactions
