"""Front-door settings of the Cluster and the SmtpCredential, rendered by the operator's own renderers and
served by the real relay: an implicit-TLS port, the Received header without the client's address, and a
credential that may send with the null sender."""

from __future__ import annotations

import email
import smtplib
import socket
from pathlib import Path

from localkit import (
    HOSTNAME,
    cluster,
    credential,
    domain,
    free_port,
    generated_passwords,
    message,
    serving,
    write_manifests,
)
from mta_relay.spool import SpoolEntry, decode_entry, slot_files


class _Smtps(smtplib.SMTP_SSL):
    """SMTP_SSL that checks the certificate against the Cluster's hostname, not the address dialled."""

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return self.context.wrap_socket(socket.create_connection((host, port), timeout),
                                        server_hostname=HOSTNAME)


def _spooled(state: Path) -> list[SpoolEntry]:
    slots = state / "spool" / "slots"
    return [decode_entry(data) for data in (p.read_bytes() for p in slot_files(slots)) if data]


def test_implicit_tls_port_trace_privacy_and_the_null_sender(tmp_path: Path) -> None:
    manifests = write_manifests(
        tmp_path / "manifests",
        # Delivery to a closed port: what was accepted stays in the spool to be looked at.
        cluster(smtp={"ports": [587], "implicitTlsPorts": [465], "traceClientAddress": False},
                delivery={"mode": "Smarthost", "smarthost": {"host": "127.0.0.1", "port": free_port()}}),
        domain(),
        credential("relayer", allowNullSender=True), credential("app"))
    smtps = free_port()
    with serving(manifests, tmp_path / "state", more_ports={465: smtps}) as served:
        assert f"smtps://127.0.0.1:{smtps}" in served.header
        passwords = generated_passwords(served.header)
        served.wait_for_log('"event": "serving"')
        client = _Smtps("127.0.0.1", smtps, context=served.tls(), timeout=10)
        try:
            client.ehlo("app.example.com")
            assert "starttls" not in client.esmtp_features  # TLS is on from the first byte
            client.login("relayer", passwords["relayer"])
            # A bounce from a Postfix relaying through the cluster: the null sender, allowed here.
            client.sendmail("", ["someone@example.net"],
                            message("MAILER-DAEMON@example.com", "someone@example.net", "bounce"))
        finally:
            client.quit()
        other = served.connect()
        try:
            other.login("app", passwords["app"])
            code, text = other.mail("<>")
            assert code == 550
            assert b"Null sender" in text
        finally:
            other.quit()
        served.wait_for_log('"event": "accepted"')
    (entry,) = _spooled(tmp_path / "state")
    assert entry.envelope.mail_from == ""
    received = email.message_from_bytes(entry.message)["Received"]
    assert "authenticated as relayer" in received
    assert "127.0.0.1" not in received  # traceClientAddress: false
    assert "from " not in received
