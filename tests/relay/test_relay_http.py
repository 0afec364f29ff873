"""HTTP on its own port: the injection API (KumoMTA/unMTA JSON) under the SMTP policy, health and
metrics — over real HTTPS."""

from __future__ import annotations

import base64
import json
import ssl
import time
from email import message_from_bytes
from email.policy import default

import pytest
from cryptography import x509
from mta_relay import config_loader
from prometheus_client.parser import text_string_to_metric_families
from relaykit import PASSWORD, RelayThread, https

RAW = "From: app@example.com\nTo: r@example.net\nSubject: raw\n\nline one\nline two\n"


def _inject(relay: RelayThread, tls: ssl.SSLContext, payload: object, user: str | None = "app",
            password: str = PASSWORD, **kw) -> tuple[int, dict, dict]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    status, headers, data = https(relay.server.http_port, tls, "/api/inject/v1", method="POST", body=body,
                                  user=user, password=password, **kw)
    return status, headers, json.loads(data)


def _entries(relay: RelayThread) -> list:
    spool = relay.relay.spool
    return [spool.read(q) for q in spool.queue_ids()]


def test_health_ready_metrics(relay: RelayThread, tls_client: ssl.SSLContext) -> None:
    port = relay.server.http_port
    assert https(port, tls_client, "/healthz")[0] == 200
    status, _, body = https(port, tls_client, "/readyz")
    assert status == 200
    assert json.loads(body) == {"ready": True, "config": True, "tls": True, "spool": True,
                                "not_draining": True, "not_leaving": True}
    _inject(relay, tls_client, {"envelope_sender": "app@example.com", "recipients": ["r@example.net"],
                                "content": RAW})
    status, _, body = https(port, tls_client, "/metrics")
    text = body.decode()
    assert status == 200
    assert 'mta_messages_accepted_total{source="http"} 1.0' in text
    metric_lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert all(line.startswith("mta_") for line in metric_lines)
    assert "app@example.com" not in text
    assert 'credential="' not in text


def test_metrics_certificate_expiry_and_spool_space(relay: RelayThread, tls_client: ssl.SSLContext) -> None:
    """The alerting rules' inputs: the certificate's notAfter and the spool volume's free and total bytes."""
    settings = relay.server.relay.settings  # type: ignore[union-attr]
    pem = config_loader.resolve_path(relay.config_dir, settings.tls.cert_file).read_bytes()
    not_after = x509.load_pem_x509_certificate(pem).not_valid_after_utc.timestamp()

    def samples() -> dict[str, float]:
        text = https(relay.server.http_port, tls_client, "/metrics")[2].decode()
        return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}

    got = samples()
    assert got["mta_tls_certificate_expiry_timestamp_seconds"] == not_after
    deadline = time.monotonic() + 10  # the health loop fills the spool gauges every 2 s
    while got["mta_spool_filesystem_size_bytes"] == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
        got = samples()
    assert 0 < got["mta_spool_filesystem_avail_bytes"] <= got["mta_spool_filesystem_size_bytes"]


def test_raw_content(relay: RelayThread, tls_client: ssl.SSLContext) -> None:
    status, _, result = _inject(relay, tls_client, {
        "envelope_sender": "app@example.com", "recipients": ["r@example.net", {"email": "s@example.org"}],
        "content": RAW})
    assert status == 200
    assert result == {"success_count": 2, "fail_count": 0, "failed_recipients": [], "errors": []}
    (entry,) = _entries(relay)
    assert entry.envelope.rcpts == ("r@example.net", "s@example.org")
    assert entry.envelope.source == "http"
    # as given (CRLF), besides the trace and Date/Message-ID fields acceptance adds to every message
    head, _, body = entry.message.partition(b"\r\n\r\n")
    assert body == b"line one\r\nline two\r\n"
    assert b"\r\nFrom: app@example.com\r\nTo: r@example.net\r\nSubject: raw\r\n" in head + b"\r\n"


def test_built_content_one_message_per_recipient(relay: RelayThread, tls_client: ssl.SSLContext) -> None:
    status, _, result = _inject(relay, tls_client, {
        "envelope_sender": "app@example.com",
        "recipients": [{"email": "a@example.net", "name": "A"}, "b@example.net"],
        "content": {"from": {"email": "app@example.com", "name": "The App"}, "subject": "Hello",
                    "reply_to": "help@example.com", "text_body": "plain", "html_body": "<p>html</p>",
                    "headers": {"X-Campaign": "c1"},
                    "attachments": [{"data": base64.b64encode(b"%PDF-1").decode(), "base64": True,
                                     "content_type": "application/pdf", "file_name": "a.pdf"}]}})
    assert status == 200, result
    assert result["success_count"] == 2
    messages = {e.envelope.rcpts[0]: message_from_bytes(e.message, policy=default) for e in _entries(relay)}
    assert set(messages) == {"a@example.net", "b@example.net"}
    first = messages["a@example.net"]
    assert first["To"] == "A <a@example.net>"  # each recipient sees only itself
    assert first["From"] == "The App <app@example.com>"
    assert first["X-Campaign"] == "c1"
    assert first.get_body(("html",)).get_content().strip() == "<p>html</p>"
    assert [p.get_filename() for p in first.iter_attachments()] == ["a.pdf"]


@pytest.mark.parametrize(("kwargs", "status", "reason"), [
    ({"user": None}, 401, "auth_required"),
    ({"password": "wrong"}, 401, "auth_failed"),
    ({"user": "restricted"}, 403, "ip_not_authorized"),
    ({"sender": "app@evil.example"}, 403, "sender_domain"),
    ({"content": RAW.replace("From: app@example.com", "From: x@evil.example")}, 403, "header_domain"),
    ({"payload": b"{not json"}, 400, "bad_message"),
    ({"content": {"from": "app@example.com", "subject": "x", "template": "{{ no }}"}}, 400, "bad_message"),
    ({"content": "From: app@example.com\n\n" + ("x" * 900 + "\n") * 80}, 413, "too_big"),
])
def test_refusals(relay: RelayThread, tls_client: ssl.SSLContext, kwargs: dict, status: int,
                  reason: str) -> None:
    payload = kwargs.pop("payload", None) or {"envelope_sender": kwargs.pop("sender", "app@example.com"),
                                              "recipients": ["r@example.net"],
                                              "content": kwargs.pop("content", RAW)}
    got, headers, body = _inject(relay, tls_client, payload, **kwargs)
    assert (got, body["reason"]) == (status, reason), body
    if status == 401:
        assert headers["WWW-Authenticate"].startswith("Basic")
    assert _entries(relay) == []


def test_quota_429(relay: RelayThread, tls_client: ssl.SSLContext) -> None:
    payload = {"envelope_sender": "app@example.com", "recipients": ["r@example.net"], "content": RAW}
    assert _inject(relay, tls_client, payload, user="quota-two")[0] == 200
    assert _inject(relay, tls_client, payload, user="quota-two")[0] == 200
    status, headers, body = _inject(relay, tls_client, payload, user="quota-two")
    assert (status, body["reason"]) == (429, "quota")
    assert body["reply"] == "452 4.7.1 Quota exceeded, try again later"
    assert "Retry-After" in headers


def test_spool_unwritable_503_and_not_ready(relay: RelayThread, tls_client: ssl.SSLContext) -> None:
    spool = relay.relay.spool
    spool.slots.rename(spool.root / "slots.moved")
    spool.slots.write_bytes(b"")
    try:
        status, _, body = _inject(relay, tls_client, {"envelope_sender": "app@example.com",
                                                      "recipients": ["r@example.net"], "content": RAW})
        assert (status, body["reason"]) == (503, "spool")
        assert https(relay.server.http_port, tls_client, "/readyz")[0] == 503
    finally:
        spool.slots.unlink()
        (spool.root / "slots.moved").rename(spool.slots)


def test_source_ip_credential_without_auth_header(relay: RelayThread, tls_client: ssl.SSLContext) -> None:
    payload = {"envelope_sender": "app@example.org", "recipients": ["r@example.net"],
               "content": RAW.replace("example.com", "example.org")}
    assert _inject(relay, tls_client, payload, user=None, source="127.0.0.3")[0] == 200
    assert _inject(relay, tls_client, payload, user=None, source="127.0.0.4")[0] == 401


def test_no_cleartext_http(relay: RelayThread) -> None:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", relay.server.http_port, timeout=5)
    connection.request("GET", "/healthz")
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        connection.getresponse()


def test_submission_off_keeps_the_port_for_probes(relay_setup, tls_client: ssl.SSLContext) -> None:
    """http.inject false (a Cluster's http.enabled: false): the HTTPS port still serves probes and
    metrics (and the peers' hand-off), and refuses submission with 404, whatever the credentials."""
    relay_setup.settings = {**relay_setup.settings, "http": {**relay_setup.settings.get("http", {}),
                                                             "inject": False}}
    relay_setup.write()
    thread = RelayThread(relay_setup.config_dir).start()
    try:
        port = thread.server.http_port
        assert https(port, tls_client, "/readyz")[0] == 200
        status, _, body = _inject(thread, tls_client, {"envelope_sender": "app@example.com",
                                                       "recipients": ["r@example.net"], "content": RAW})
        assert status == 404
        assert "off" in body["error"]
        assert _entries(thread) == []
    finally:
        thread.stop()
