"""curl as an SMTP client: a file uploaded with ``--crlf`` over STARTTLS (``smtp://`` + ``--ssl-reqd``)
and over implicit TLS (``smtps://``), AUTH PLAIN with ``--user``; curl adds no header field of its own.

curl picks the strongest SASL mechanism the server offers, and the relay offers CRAM-MD5 to everyone as
soon as one credential opts in; so ``--login-options AUTH=PLAIN`` asks for PLAIN
(``test_curl_default_mechanism_with_a_plain_only_credential`` shows what happens without it).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from clientkit import (
    APP_PASSWORD,
    APP_USER,
    SENDER,
    arrival,
    assert_arrived_intact,
    lf,
    message,
    program,
    run,
)


def curl_argv(url: str, relay, recipient: str, upload: Path, *extra: str) -> list[str]:
    return [program("curl", "curl"), "--silent", "--show-error", "--fail", "--url", url,
         "--cacert", str(relay.ca_file), "--mail-from", SENDER, "--mail-rcpt", recipient,
         "--user", f"{APP_USER}:{APP_PASSWORD}", "--upload-file", str(upload), "--crlf", *extra]


def curl_send(url: str, relay, recipient: str, upload: Path, *extra: str) -> None:
    run(curl_argv(url, relay, recipient, upload, *extra))


@pytest.mark.parametrize("date_and_id", [True, False], ids=["with-date-and-id", "without"])
def test_curl_starttls_upload(relay, receiver, dns_server, recipient, token, workdir, date_and_id) -> None:
    submitted = message(token, recipient, date_and_id=date_and_id)
    upload = workdir / "message.eml"
    upload.write_bytes(lf(submitted))  # a Unix file: --crlf makes every line end CRLF on the wire
    curl_send(f"smtp://127.0.0.1:{relay.submission_port}/client.example", relay, recipient, upload,
              "--ssl-reqd", "--login-options", "AUTH=PLAIN")
    assert_arrived_intact(arrival(receiver, recipient), submitted, dns_server)


def test_curl_implicit_tls_upload(relay, receiver, dns_server, recipient, token, workdir) -> None:
    submitted = message(token, recipient, date_and_id=False)
    upload = workdir / "message.eml"
    upload.write_bytes(lf(submitted))
    curl_send(f"smtps://127.0.0.1:{relay.implicit_port}/client.example", relay, recipient, upload,
              "--login-options", "AUTH=PLAIN")
    assert_arrived_intact(arrival(receiver, recipient), submitted, dns_server)


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "the relay advertises AUTH CRAM-MD5 LOGIN PLAIN to every client once any credential opts in to "
    "CRAM-MD5; curl then uses CRAM-MD5 and a PLAIN/LOGIN-only credential gets "
    "'535 5.7.8 Authentication failed' (curl: (67) Login denied)"))
def test_curl_default_mechanism_with_a_plain_only_credential(relay, receiver, dns_server, recipient, token,
                                                             workdir) -> None:
    submitted = message(token, recipient, date_and_id=False)
    upload = workdir / "message.eml"
    upload.write_bytes(lf(submitted))
    done = subprocess.run(curl_argv(f"smtp://127.0.0.1:{relay.alt_port}/client.example", relay, recipient,
                                    upload, "--ssl-reqd", "--verbose"), capture_output=True, check=False)
    replies = [line for line in done.stderr.decode(errors="replace").splitlines() if line.startswith("< 5")]
    assert done.returncode == 0, f"curl exited with {done.returncode}: {replies}"
    assert_arrived_intact(arrival(receiver, recipient), submitted, dns_server)
