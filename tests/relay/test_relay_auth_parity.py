"""SMTP AUTH and HTTP Basic take one authentication path (``mta_relay.authenticate``): for the same
username, password and client address they refuse for the same reason, and share one throttle."""

from __future__ import annotations

import json
import ssl

import pytest
from mta_relay import replies
from relaykit import PASSWORD, RawSmtp, RelayThread, https

# (case, username, password, reason); each protocol runs from its own loopback address so that the
# per-address throttle of one does not leak into the other.
CASES = [
    ("wrong-password", "app", "not-the-password", replies.AUTH_FAILED.reason),
    ("unknown-user", "nobody-here", PASSWORD, replies.AUTH_FAILED.reason),
    ("ip-not-allowed", "restricted", PASSWORD, replies.IP_NOT_AUTHORIZED.reason),
    ("source-ip-credential-has-no-password", "by-source-ip", PASSWORD, replies.AUTH_FAILED.reason),
    ("suspended", "suspended", PASSWORD, replies.CREDENTIAL_SUSPENDED.reason),
]
_BY_SMTP = {r.smtp: r.reason
            for r in (replies.AUTH_FAILED, replies.IP_NOT_AUTHORIZED, replies.AUTH_THROTTLED,
                      replies.CREDENTIAL_SUSPENDED)}
_SOURCES = {"smtp": "127.0.2.1", "http": "127.0.3.1"}


def _smtp(relay: RelayThread, tls: ssl.SSLContext, username: str, password: str, source: str) -> str:
    raw = RawSmtp(relay.ports[1], source=source)
    raw.starttls(tls)
    reply = raw.auth_plain(username, password)
    if reply.startswith("235"):
        return "ok"
    return _BY_SMTP[reply]


def _http(relay: RelayThread, tls: ssl.SSLContext, username: str, password: str, source: str) -> str:
    body = json.dumps({"envelope_sender": "app@example.com", "recipients": ["r@example.net"],
                       "content": "From: app@example.com\n\nx\n"}).encode()
    status, _, data = https(relay.server.http_port, tls, "/api/inject/v1", method="POST", body=body,
                            headers={"Content-Type": "application/json"}, user=username, password=password,
                            source=source)
    return "ok" if status == 200 else json.loads(data)["reason"]


PROTOCOLS = {"smtp": _smtp, "http": _http}


@pytest.mark.parametrize(("case", "username", "password", "reason"), CASES, ids=[c[0] for c in CASES])
def test_same_reason_over_smtp_and_http(relay: RelayThread, tls_client: ssl.SSLContext, case: str,
                                        username: str, password: str, reason: str) -> None:
    got = {name: attempt(relay, tls_client, username, password, _SOURCES[name])
           for name, attempt in PROTOCOLS.items()}
    assert got == {"smtp": reason, "http": reason}, case


def test_same_throttle_over_smtp_and_http(relay: RelayThread, tls_client: ssl.SSLContext) -> None:
    """Ten failures from one address (the default limit), then even the right password is throttled; the
    failures of one protocol count for the other, since both share one throttle. Each protocol fails
    with its own username: the throttle counts per username too."""
    got = {}
    for name, attempt in PROTOCOLS.items():
        source = _SOURCES[name]
        assert [attempt(relay, tls_client, f"nobody-{name}", f"wrong-{i}", source) for i in range(10)] == [
            replies.AUTH_FAILED.reason] * 10
        got[name] = attempt(relay, tls_client, "two-domains", PASSWORD, source)
    assert got == {"smtp": replies.AUTH_THROTTLED.reason, "http": replies.AUTH_THROTTLED.reason}
    # HTTP failures from another address throttle SMTP there too, and the other way round
    assert _smtp(relay, tls_client, "two-domains", PASSWORD, "127.0.4.1") == "ok"
    for i in range(10):
        _http(relay, tls_client, "nobody", f"wrong-{i}", "127.0.4.1")
    assert _smtp(relay, tls_client, "two-domains", PASSWORD, "127.0.4.1") == replies.AUTH_THROTTLED.reason
