"""A multi-line reply goes out whole: EHLO's lines in one TLS record (one read), not one per line."""

from __future__ import annotations

import ssl
import time

from relaykit import RawSmtp, RelayThread


def test_ehlo_reply_arrives_in_one_tls_record(relay: RelayThread, tls_client: ssl.SSLContext) -> None:
    raw = RawSmtp(relay.ports[0])
    raw.starttls(tls_client, ehlo=False)
    raw.send(b"EHLO client.example\r\n")
    time.sleep(0.3)  # every record the relay sends for it is here by now; an SSL read returns one record
    first_read = raw.sock.recv(65536).decode()
    lines = first_read.split("\r\n")
    assert lines[-1] == ""
    assert [line[:4] for line in lines[:-2]] == ["250-"] * (len(lines) - 2)
    assert lines[-2] == "250 HELP"
    assert any(line.startswith("250-AUTH ") for line in lines)
    assert raw.cmd("NOOP").startswith("250")  # nothing of the reply was left behind
    raw.close()
