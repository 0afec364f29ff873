"""swaks: STARTTLS (``--tls``, certificate verified against the test CA), AUTH PLAIN, LOGIN and CRAM-MD5,
the whole message given as DATA from a file (without its last line end, which swaks adds before the
final dot); swaks dot-stuffs it and adds no header field."""

from __future__ import annotations

import pytest
from clientkit import (
    APP_PASSWORD,
    APP_USER,
    CRAM_PASSWORD,
    CRAM_USER,
    SENDER,
    arrival,
    assert_arrived_intact,
    message,
    program,
    run,
)

pytestmark = pytest.mark.swaks


@pytest.mark.parametrize(("mechanism", "user", "password"), [
    ("PLAIN", APP_USER, APP_PASSWORD),
    ("LOGIN", APP_USER, APP_PASSWORD),
    ("CRAM-MD5", CRAM_USER, CRAM_PASSWORD),
], ids=["plain", "login", "cram-md5"])
def test_swaks_starttls(relay, receiver, dns_server, recipient, token, workdir, mechanism, user,
                        password) -> None:
    submitted = message(token, recipient, date_and_id=mechanism != "LOGIN")
    data = workdir / "message.eml"
    data.write_bytes(submitted.removesuffix(b"\r\n"))  # swaks ends DATA with CRLF "." CRLF itself
    done = run([program("swaks", "swaks (with libnet-ssleay-perl, libio-socket-ssl-perl, "
                                 "libauthen-sasl-perl, libdigest-hmac-perl)"),
                "--server", "127.0.0.1", "--port", str(relay.submission_port), "--helo", "client.example",
                "--tls", "--tls-verify", "--tls-ca-path", str(relay.ca_file),
                "-a", mechanism, "--auth-user", user, "--auth-password", password,
                "--from", SENDER, "--to", recipient, "--data", f"@{data}",
                "--suppress-data"])
    assert f"AUTH {mechanism}".encode() in done.stdout  # the mechanism asked for is the one used
    assert_arrived_intact(arrival(receiver, recipient), submitted, dns_server)
