"""Hypothesis on the parsers: the framing guard, addresses, headers, the injection JSON, and live SMTP
command, address and AUTH parsing — no exception may escape, and the session must survive."""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
from collections.abc import Iterator

import pytest
import trustme
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from mta_relay import inject_format
from mta_relay.config import Credential
from mta_relay.framing import LineFraming
from mta_relay.policy import Policy, domain_of
from relaykit import PASSWORD, RawSmtp, RelayThread, password_credential, write_config
from relaykit import settings as relay_settings
from support.tls import write_server_cert

_WELL_FORMED = re.compile(rb"\A(?:[^\r\n\x00]|\r\n)*\Z")


@given(st.lists(st.binary(max_size=40), max_size=8))
def test_framing_matches_reference_whatever_the_chunking(chunks: list[bytes]) -> None:
    framing = LineFraming()
    verdicts = [framing.feed(chunk) for chunk in chunks]
    stream = b"".join(chunks)
    complete = stream[:-1] if stream.endswith(b"\r") else stream  # a final CR may still get its LF
    assert all(verdicts) == bool(_WELL_FORMED.match(complete))


@given(st.text())
def test_domain_of_never_raises(address: str) -> None:
    domain = domain_of(address)
    assert domain is None or domain == domain.lower()


@given(st.binary(max_size=400))
def test_header_check_never_raises(message: bytes) -> None:
    cred = Credential.model_validate(password_credential("app", "pw"))
    policy = Policy.__new__(Policy)
    policy.cluster_domains = frozenset({"example.com"})

    async def spf(_: str) -> bool:
        return False

    reply = asyncio.run(policy.check_headers(cred, message, spf))
    assert reply is None or reply.code in (550, 451)


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                               st.sampled_from(["envelope_sender", "recipients", "content", "from",
                                                "email", "text_body", "attachments", "data", "base64",
                                                "headers", "x"]),
                               inner, max_size=4), max_leaves=12)


@given(JSON_VALUES)
def test_inject_request_parsing_never_raises_unexpectedly(value: object) -> None:
    import json

    try:
        prepared = inject_format.prepare(inject_format.parse(json.dumps(value).encode()))
        list(inject_format.outcomes(prepared, limit=64 * 1024, max_recipients=100))
    except inject_format.BadRequest:
        pass


# --- live: one relay for the module (hypothesis reuses it across examples) ------------------------------
@pytest.fixture(scope="module")
def fuzz_relay(tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA) -> Iterator[RelayThread]:
    root = tmp_path_factory.mktemp("fuzz")
    cert, key = write_server_cert(ca, root / "tls")
    config = relay_settings([0], 0, cert, key, root / "spool",
                            limits={"maxConnectionsPerIp": 1000, "authFailuresBeforeDisconnect": 1_000_000,
                                    "authFailureDelaySeconds": 0, "shutdownGraceSeconds": 0.2},
                            delivery={"mode": "Smarthost", "smarthost": {"host": "127.0.0.1", "port": 9,
                                                                          "tls": "None"}})
    write_config(root / "config", config, [password_credential("app", PASSWORD)])
    thread = RelayThread(root / "config").start()
    yield thread
    thread.stop()


def _session(relay: RelayThread, ca: trustme.CA, login: bool = False) -> RawSmtp:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    raw = RawSmtp(relay.ports[0])
    raw.starttls(context)
    if login:  # so MAIL and RCPT reach the address parser and the policy
        assert raw.auth_plain("app", PASSWORD).startswith("235")
    return raw


LINE = st.binary(max_size=120).filter(lambda b: b"\r" not in b and b"\n" not in b and b"\0" not in b)
COMMAND = st.one_of(
    LINE,
    st.builds(lambda verb, arg: verb + b" " + arg,
              st.sampled_from([b"MAIL FROM:", b"RCPT TO:", b"EHLO", b"HELO", b"VRFY", b"AUTH", b"HELP",
                               b"NOOP"]),
              LINE),
    st.builds(lambda arg: b"MAIL FROM:<" + arg + b">", LINE),
)


def _alive(raw: RawSmtp) -> None:
    assert raw.cmd("NOOP").startswith("250")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(COMMAND, min_size=1, max_size=4))
@example([b"VRFY (\x80"])  # found by this test: aiosmtpd echoed undecodable bytes and crashed the reply
@example([b"MAIL FROM:<"])  # found by this test: the email package's path parser crashed (IndexError)
@example([b"MAIL FROM:<a@[b>"])  # its AttributeError, on the same kind of garbage
def test_live_commands_never_crash_the_session(fuzz_relay: RelayThread, ca: trustme.CA,
                                               lines: list[bytes]) -> None:
    raw = _session(fuzz_relay, ca, login=True)
    try:
        for line in lines:
            reply = raw.cmd(line)
            assert re.match(r"^\d{3}[ -]", reply), reply
            assert not reply.startswith("451 4.3.0"), f"an exception escaped for {line!r}"
            if reply.startswith(("221", "502 5.5.1")):  # QUIT, or aiosmtpd's bogus-command limit
                return
            if reply.startswith("334"):
                raw.cmd(b"*")
        _alive(raw)
    finally:
        raw.close()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200), st.sampled_from(["PLAIN", "LOGIN"]))
def test_live_auth_blobs_never_crash(fuzz_relay: RelayThread, ca: trustme.CA, blob: bytes,
                                     mechanism: str) -> None:
    raw = _session(fuzz_relay, ca)
    try:
        encoded = base64.b64encode(blob).decode() or "="
        reply = raw.cmd(f"AUTH {mechanism} {encoded}")
        if reply.startswith("334"):
            reply = raw.cmd(base64.b64encode(blob[::-1]))
        assert reply[:3] in ("235", "501", "535"), reply
        _alive(raw)
    finally:
        raw.close()
