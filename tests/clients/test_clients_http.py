"""The HTTP injection API with curl: ``POST /api/inject/v1`` over HTTPS, Basic auth, a KumoMTA
InjectV1Request whose ``content`` is the same raw message the SMTP clients send."""

from __future__ import annotations

import json

import pytest
from clientkit import (
    APP_PASSWORD,
    APP_USER,
    SENDER,
    arrival,
    assert_arrived_intact,
    message,
    program,
    run,
)


@pytest.mark.parametrize("dialect", [None, "Static"], ids=["default-dialect", "static"])
def test_curl_inject(relay, receiver, dns_server, recipient, token, workdir, dialect) -> None:
    submitted = message(token, recipient, date_and_id=dialect is None)
    request = {"envelope_sender": SENDER, "recipients": [{"email": recipient}],
               "content": submitted.decode()}
    if dialect is not None:
        request["template_dialect"] = dialect
    body = workdir / "inject.json"
    body.write_text(json.dumps(request, ensure_ascii=False), encoding="utf-8")
    done = run([program("curl", "curl"), "--silent", "--show-error", "--fail-with-body",
                "--cacert", str(relay.ca_file), "--user", f"{APP_USER}:{APP_PASSWORD}",
                "--header", "Content-Type: application/json", "--data-binary", f"@{body}",
                f"{relay.https_url}/api/inject/v1"])
    response = json.loads(done.stdout)
    assert (response["success_count"], response["fail_count"]) == (1, 0), response
    arrived = assert_arrived_intact(arrival(receiver, recipient), submitted, dns_server)
    assert b" with HTTPS " in arrived.received
