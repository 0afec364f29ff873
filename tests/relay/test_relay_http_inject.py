"""The HTTP injection API as KumoMTA's ``InjectV1Request``: every field works or is refused with a 400 that
names it, substitutions per recipient in a sandbox, recipients checked as mailboxes, batches within the
relay's recipient limit, and no request ever answered 500 — all over real HTTPS to a running relay."""

from __future__ import annotations

import base64
import json
import ssl
from email import message_from_bytes
from email.policy import default

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from relaykit import PASSWORD, RelayThread, https

RAW = "From: app@example.com\nTo: {{ to_header }}\nSubject: Hi {{ name }}\n\nHello {{ name }} of {{ team }}\n"


def _inject(relay: RelayThread, tls: ssl.SSLContext, payload: object) -> tuple[int, dict]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    status, _, data = https(relay.server.http_port, tls, "/api/inject/v1", method="POST", body=body,
                            user="app", password=PASSWORD)
    return status, json.loads(data)


def _entries(relay: RelayThread) -> list:
    spool = relay.relay.spool
    return [spool.read(q) for q in spool.queue_ids()]


def _by_rcpt(relay: RelayThread) -> dict:
    return {e.envelope.rcpts[0]: message_from_bytes(e.message, policy=default) for e in _entries(relay)}


def _built(**content) -> dict:
    return {"envelope_sender": "app@example.com", "recipients": [{"email": "r@example.net", "name": "R"}],
            "content": {"from": "app@example.com", "text_body": "text", **content}}


def test_substitutions_per_recipient_raw(relay: RelayThread, tls_client: ssl.SSLContext) -> None:
    status, result = _inject(relay, tls_client, {
        "envelope_sender": "app@example.com", "content": RAW, "substitutions": {"team": "Ops", "name": "?"},
        "recipients": [{"email": "a@example.net", "name": "Ann"},
                       {"email": "b@example.net", "name": "Bob", "substitutions": {"team": "Dev"}}]})
    assert status == 200, result
    assert result["success_count"] == 2
    got = _by_rcpt(relay)
    assert got["a@example.net"]["Subject"] == "Hi Ann"
    assert got["a@example.net"]["To"] == "Ann <a@example.net>"
    assert got["a@example.net"].get_content().rstrip() == "Hello Ann of Ops"
    assert got["b@example.net"].get_content().rstrip() == "Hello Bob of Dev"  # the recipient's own value wins


def test_a_utf8_address_with_a_name_is_sent_with_smtputf8(relay: RelayThread,
                                                           tls_client: ssl.SSLContext) -> None:
    payload = _built()
    payload["recipients"] = [{"email": "bjørn@exämple.net", "name": "Bjørn, Jr"}]
    status, result = _inject(relay, tls_client, payload)
    assert (status, result["success_count"]) == (200, 1), result
    (entry,) = _entries(relay)
    assert entry.envelope.smtputf8
    assert message_from_bytes(entry.message, policy=default)["To"] == "\"Bjørn, Jr\" <bjørn@exämple.net>"


def test_substitutions_in_built_content(relay: RelayThread, tls_client: ssl.SSLContext) -> None:
    status, result = _inject(relay, tls_client, {
        **_built(subject="For {{ name }}", text_body="{{ n * 2 }} {{ undefined_prints_nothing }}|",
                 html_body="<p>{{ snippet }}</p>", headers={"X-Id": "id-{{ email }}"}),
        "substitutions": {"n": 21, "snippet": "<b>&"}})
    assert status == 200, result
    message = _by_rcpt(relay)["r@example.net"]
    assert message["Subject"] == "For R"
    assert message["X-Id"] == "id-r@example.net"
    assert message.get_body(("plain",)).get_content().rstrip() == "42 |"
    # html_body escapes substitutions, as KumoMTA's html template does
    assert message.get_body(("html",)).get_content().rstrip() == "<p>&lt;b&gt;&amp;</p>"


def test_static_dialect_is_literal(relay: RelayThread, tls_client: ssl.SSLContext) -> None:
    status, _ = _inject(relay, tls_client, {**_built(subject="{{ name }}"), "template_dialect": "Static"})
    assert status == 200
    assert _by_rcpt(relay)["r@example.net"]["Subject"] == "{{ name }}"


def test_client_message_id_and_date_are_used_once(relay: RelayThread, tls_client: ssl.SSLContext) -> None:
    status, result = _inject(relay, tls_client, _built(headers={
        "Message-ID": "<given.1@example.com>", "Date": "Mon, 2 Mar 2026 10:00:00 +0000",
        "List-Unsubscribe": "<mailto:u@example.com>"}))
    assert status == 200, result
    message = _by_rcpt(relay)["r@example.net"]
    assert message.get_all("Message-ID") == ["<given.1@example.com>"]
    assert message.get_all("Date") == ["Mon, 02 Mar 2026 10:00:00 +0000"]


def test_bad_recipients_are_named_and_the_rest_sent(relay: RelayThread, tls_client: ssl.SSLContext) -> None:
    status, result = _inject(relay, tls_client, {
        "envelope_sender": "app@example.com", "content": "From: app@example.com\n\nx\n",
        "recipients": ["not-an-email", "ok@example.net", {"email": "a b@x.test"}, "x@", "c@(comment)x.test",
                       "d@[x.test"]})  # the email package's parser crashes on that one: refused all the same
    assert status == 200, result
    assert result["success_count"] == 1
    assert result["failed_recipients"] == [
        "not-an-email", "a b@x.test", "x@", "c@(comment)x.test", "d@[x.test"]
    assert result["fail_count"] == 5 == len(result["errors"])
    assert result["errors"][0].startswith("not-an-email: email: not a mailbox")
    assert [e.envelope.rcpts for e in _entries(relay)] == [("ok@example.net",)]


def test_beyond_max_recipients_several_transactions(relay_setup, tls_client: ssl.SSLContext) -> None:
    relay_setup.settings = {**relay_setup.settings,
                            "limits": {**relay_setup.settings["limits"], "maxRecipients": 3}}
    relay_setup.write()
    thread = RelayThread(relay_setup.config_dir).start()
    try:
        rcpts = [f"r{i}@example.net" for i in range(7)]
        status, result = _inject(thread, tls_client, {
            "envelope_sender": "app@example.com", "recipients": rcpts,
            "content": "From: app@example.com\n\nx\n"})
        assert status == 200, result
        assert result["success_count"] == 7
        batches = sorted(e.envelope.rcpts for e in _entries(thread))
        assert sorted(r for b in batches for r in b) == sorted(rcpts)
        assert sorted(len(b) for b in batches) == [1, 3, 3]
    finally:
        thread.stop()


def test_supplemental_trace_header(relay: RelayThread, tls_client: ssl.SSLContext) -> None:
    status, _ = _inject(relay, tls_client, {**_built(), "trace_headers": {"header_name": "X-Ref"}})
    assert status == 200
    value = _by_rcpt(relay)["r@example.net"]["X-Ref"]
    assert json.loads(base64.b64decode(value)) == {"_@_": "\\_/", "recipient": "r@example.net"}


@pytest.mark.parametrize(("change", "field"), [
    ({"deferred_generation": True}, "deferred_generation"),
    ({"deferred_spool": True}, "deferred_spool"),
    ({"template_dialect": "Handlebars"}, "template_dialect"),
    ({"template_dialect": "Mustache"}, "template_dialect"),
    ({"unknown": 1}, "unknown"),
    ({"envelope_sender": "not a sender"}, "envelope_sender"),
    ({"recipients": []}, "recipients"),
    ({"recipients": ["a@example.net", {"name": "no email"}]}, "recipients[1].email"),
    ({"recipients": ["a@example.net", {"email": "b@example.net", "metadata": {"k": 1}}]},
     "recipients[1].metadata"),
    ({"content": 5}, "content"),
    ({"trace_headers": {"include_meta_names": ["tenant"]}}, "trace_headers.include_meta_names"),
    ({"trace_headers": {"header_name": "Subject"}}, "trace_headers.header_name"),
    ({"content": {"from": "app@example.com"}}, "content.text_body"),
    ({"content": {"text_body": "x"}}, "content.from"),
    ({"content": {"from": "not-an-email", "text_body": "x"}}, "content.from.email"),
    ({"content": {"from": "app@example.com", "text_body": "x", "headers": {"Received": "x"}}},
     "content.headers.Received"),
    ({"content": {"from": "app@example.com", "text_body": "x", "headers": {"dkim-signature": "x"}}},
     "content.headers.dkim-signature"),
    ({"content": {"from": "app@example.com", "text_body": "x", "headers": {"To": "x@example.net"}}},
     "content.headers.To"),
    ({"content": {"from": "app@example.com", "text_body": "x", "headers": {"From": "a@example.com"}}},
     "content.headers.From"),
    ({"content": {"from": "app@example.com", "text_body": "x", "headers": {"X-A": "a\r\nBcc: b"}}},
     "content.headers.X-A"),
    ({"content": {"from": "app@example.com", "text_body": "x", "headers": {"Bad Name": "x"}}},
     "content.headers.Bad Name"),
    ({"content": {"from": "app@example.com", "text_body": "x",
                  "attachments": [{"data": "!!", "base64": True}]}},
     "content.attachments[0].data"),
    ({"content": {"from": "app@example.com", "text_body": "x",
                  "attachments": [{"data": "x", "content_type": "nonsense"}]}},
     "content.attachments[0].content_type"),
    ({"content": {"from": "app@example.com", "text_body": "{{ ''.__class__.__mro__ }}"}},
     "content.text_body"),
    ({"content": {"from": "app@example.com", "text_body": "x", "subject": "{% include 'x' %}"}},
     "content.subject"),
    ({"content": {"from": "app@example.com", "text_body": "x", "headers": {"X-A": "{{ x|attr('y') }}"}}},
     "content.headers.X-A"),
    ({"content": "From: a@example.com\n\n{% macro m() %}{% endmacro %}"}, "content"),
    ({"content": "From: a@example.com\n\n{% if %}"}, "content"),
])
def test_refused_fields_are_named(relay: RelayThread, tls_client: ssl.SSLContext, change: dict,
                                  field: str) -> None:
    payload = {"envelope_sender": "app@example.com", "recipients": ["r@example.net"],
               "content": "From: app@example.com\n\nx\n", **change}
    status, body = _inject(relay, tls_client, payload)
    assert (status, body.get("field"), body.get("reason")) == (400, field, "bad_message"), body
    assert body["error"].startswith(f"bad request: {field}: ")
    assert _entries(relay) == []


def test_render_errors_fail_the_recipient(relay: RelayThread, tls_client: ssl.SSLContext) -> None:
    """Data-dependent failures (an attribute of an undefined value, a budget exceeded) fail that recipient,
    as a KumoMTA render error does; the others are sent."""
    status, result = _inject(relay, tls_client, {
        "envelope_sender": "app@example.com",
        "recipients": [{"email": "a@example.net", "substitutions": {"user": {"first": "A"}}},
                       {"email": "b@example.net"},
                       {"email": "c@example.net", "substitutions": {"user": {"first": "C" * 70000}}}],
        "content": {"from": "app@example.com", "text_body": "Hi {{ user.first }} {{ user.first * 1 }}"}})
    assert status == 200, result
    assert result["success_count"] == 1
    assert result["failed_recipients"] == ["b@example.net", "c@example.net"]
    assert "'user' is undefined" in result["errors"][0]
    assert set(_by_rcpt(relay)) == {"a@example.net"}


@pytest.mark.parametrize("template", [
    "{% for i in range(9999) %}{% for j in range(9999) %}{% endfor %}{% endfor %}",
    "{{ 'x' * 10000000 }}",
    "{% set a = 'x' * 9000 %}{% set b = a ~ a ~ a ~ a %}{% set c = b ~ b ~ b ~ b %}{{ c ~ c }}",
    "{{ range(9999)|join('y' * 9999) }}",
    "{{ 2 ** 999999 }}",
    "{{ '%099999999d' % 1 }}",
    "{{ email.center(99999999) }}",
])
def test_template_budget(relay: RelayThread, tls_client: ssl.SSLContext, template: str) -> None:
    status, result = _inject(relay, tls_client, _built(text_body=template))
    assert (status, result["fail_count"]) == (200, 1), result
    assert _entries(relay) == []


# --- no request is a 500 ------------------------------------------------------------------------------
_text = st.text(max_size=40)
_odd = st.one_of(_text, st.sampled_from(["", "\r\n", "\0", "\u202e", "ü@bü.example", "{{", "{% for %}",
                                          "{{ name }}", "{{ x.y }}", "{{ ''.__class__ }}",
                                          "{% include 'a' %}", "x" * 5000, "{{ 'x' * 99999999 }}", "\ud800"]))
_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _odd,
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
                     max_leaves=8)
_address = st.one_of(st.sampled_from(["r@example.net", "s@example.org", "not-an-email", "a b@x.test",
                                      "ü@bü.example", "x@[127.0.0.1]", "@", ""]), _text)
_recipient = st.one_of(_address, st.fixed_dictionaries(
    {"email": _address}, optional={"name": _odd, "substitutions": st.dictionaries(_text, _json, max_size=3),
                                   "metadata": st.just({})}))
_built_content = st.fixed_dictionaries({}, optional={
    "from": st.one_of(st.just("app@example.com"), _address, st.fixed_dictionaries(
        {"email": st.just("app@example.com")}, optional={"name": _odd})),
    "subject": _odd, "text_body": _odd, "html_body": _odd, "amp_html_body": _odd, "reply_to": _address,
    "headers": st.dictionaries(st.one_of(st.sampled_from(["X-A", "Message-ID", "Date", "Cc", "Sender",
                                                          "Received", "From", "Subject"]), _text), _odd,
                               max_size=3),
    "attachments": st.lists(st.fixed_dictionaries({"data": _odd}, optional={
        "base64": st.booleans(), "content_type": st.sampled_from(["image/gif", "text/plain", "x"]),
        "file_name": _odd, "content_id": _odd}), max_size=2)})
_request = st.fixed_dictionaries(
    {"envelope_sender": st.one_of(st.just("app@example.com"), _address),
     "recipients": st.one_of(st.lists(_recipient, min_size=1, max_size=4), _json),
     "content": st.one_of(st.just("From: app@example.com\n\nHi {{ name }}\n"), _odd, _built_content, _json)},
    optional={"substitutions": st.one_of(st.dictionaries(_text, _json, max_size=3), _json),
              "template_dialect": st.sampled_from(["Jinja", "Static", "Handlebars", 3]),
              "deferred_generation": st.one_of(st.booleans(), _json),
              "deferred_spool": st.booleans(),
              "trace_headers": st.one_of(st.fixed_dictionaries({}, optional={
                  "received_header": st.booleans(), "supplemental_header": st.booleans(),
                  "header_name": st.sampled_from(["X-KumoRef", "Subject", "X-A"]),
                  "include_meta_names": st.lists(_text, max_size=1)}), _json)})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(payload=_request)
def test_no_request_is_a_500(relay: RelayThread, tls_client: ssl.SSLContext, payload: dict) -> None:
    status, body = _inject(relay, tls_client, payload)
    assert status != 500, body
    assert status in (200, 400, 403, 413), (status, body)
    if status == 200:
        recipients = payload["recipients"]
        assert body["success_count"] + body["fail_count"] == len(recipients)
        assert body["fail_count"] == len(body["failed_recipients"]) == len(body["errors"])
    elif status == 400:
        assert body["reason"] == "bad_message"
        assert "field" in body or body["fail_count"] == len(payload["recipients"])
