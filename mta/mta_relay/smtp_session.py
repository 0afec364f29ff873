"""The SMTP session: aiosmtpd's protocol, hardened and bound to the relay's state.

What this subclass adds to aiosmtpd (configured with require_starttls, auth_required, auth_require_tls,
or, on an implicit TLS listener, with TLS from the first byte and no STARTTLS):
- a framing guard on the byte stream (``framing``): bare CR/LF or NUL → 521 and disconnect;
- a TLS ClientHello on a STARTTLS port (a client set up for implicit TLS) is recognised by its first
  bytes and the connection closed at once, with its own log line and metric reason (not a smuggling
  attempt, and no reply: the client could not read one);
- the connection limit per source IP, and 421 while shutting down;
- AUTH PLAIN / LOGIN / CRAM-MD5 decoded here and checked by ``authenticate`` (the path HTTP Basic takes
  too: throttle, password, mechanisms, allowedIPs); SourceIP credentials authenticate by address at MAIL;
- the relay's own wording for every reply aiosmtpd would give in its words (``stock_reply``): each
  refusal leaves with an enhanced status code, one log line and a metric reason. ``push`` is where
  aiosmtpd's texts are swapped, since aiosmtpd has no hook for its protocol replies; a test holds the
  table to every reply text in aiosmtpd's source;
- DATA read a chunk at a time (``smtp_data``), not a line at a time: ``_data`` restates aiosmtpd 1.4's
  ``smtp_DATA`` around that reader (aiosmtpd is pinned to 1.4 for it, and a test runs the two side by
  side).
aiosmtpd itself discards plaintext buffered behind STARTTLS (RFC 3207 §4.2) when TLS comes up.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import logging
import re
import secrets
import time
from typing import Any, cast

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope

from mta_relay import replies
from mta_relay.authenticate import CramMd5, Secret, authenticate, source_ip
from mta_relay.framing import LineFraming
from mta_relay.relay import Relay
from mta_relay.replies import Reply
from mta_relay.smtp_data import DataReader, DataState
from mta_relay.smtp_paths import parse_path

log = logging.getLogger("mta_relay.smtp")

# aiosmtpd 1.4's replies, in its words → ours. Exact texts first, then the ones that carry an argument.
_STOCK: dict[str, Reply] = {
    "500 Command line too long": replies.COMMAND_TOO_LONG,
    "500 Error: bad syntax": replies.BAD_SYNTAX,
    "500 Error: strict ASCII mode": replies.BAD_SYNTAX,
    "554 Command refused due to lack of security": replies.TLS_REFUSED,
    "530 Must issue a STARTTLS command first": replies.STARTTLS_FIRST,
    "502 5.5.1 Too many unrecognized commands, goodbye.": replies.TOO_MANY_UNKNOWN,
    "501 Syntax: HELO hostname": replies.EHLO_SYNTAX,
    "501 Syntax: EHLO hostname": replies.EHLO_SYNTAX,
    "501 Syntax: QUIT": replies.NO_ARGUMENTS,
    "501 Syntax: STARTTLS": replies.NO_ARGUMENTS,
    "501 Syntax: RSET": replies.NO_ARGUMENTS,
    "501 Syntax: DATA": replies.NO_ARGUMENTS,
    "454 TLS not available": replies.TLS_ACTIVE,
    "500 Error: command 'AUTH' not recognized": replies.AUTH_AFTER_HELO,
    "538 5.7.11 Encryption required for requested authentication mechanism": replies.AUTH_ENCRYPTION,
    "503 Already authenticated": replies.ALREADY_AUTHENTICATED,
    "501 Not enough value": replies.AUTH_SYNTAX,
    "501 Too many values": replies.AUTH_SYNTAX,
    "504 5.5.4 Unrecognized authentication type": replies.AUTH_MECHANISM,
    "535 5.7.8 Authentication credentials invalid": replies.AUTH_FAILED,
    "501 5.7.0 Auth aborted": replies.AUTH_ABORTED,
    "501 5.5.2 Can't decode base64": replies.AUTH_BASE64,
    "501 5.5.2 Can't split auth value": replies.AUTH_PLAIN_SPLIT,
    "501 Syntax: VRFY <address>": replies.VRFY_SYNTAX,
    "553 5.1.3 Error: malformed address": replies.MALFORMED_ADDRESS,
    "503 Error: nested MAIL command": replies.NESTED_MAIL,
    "501 Error: BODY can only be one of 7BIT, 8BITMIME": replies.BODY_PARAMETER,
    "501 Error: SMTPUTF8 takes no arguments": replies.SMTPUTF8_PARAMETER,
    "501 Error: SMTPUTF8 disabled": replies.SMTPUTF8_PARAMETER,
    "552 Error: message size exceeds fixed maximum message size": replies.TOO_BIG,
    "555 MAIL FROM parameters not recognized or not implemented": replies.MAIL_PARAMETERS,
    "503 Error: need MAIL command": replies.MAIL_FIRST,
    "555 RCPT TO parameters not recognized or not implemented": replies.RCPT_PARAMETERS,
    "503 Error: need RCPT command": replies.RCPT_FIRST,
    "500 Line too long (see RFC5321 4.5.3.1.6)": replies.LINE_TOO_LONG,
    "552 Error: Too much mail data": replies.TOO_BIG,
    "502 EXPN not implemented": replies.NOT_SUPPORTED,
    "500 Error: Cannot describe error": replies.INTERNAL,
}
_STOCK_PATTERNS: tuple[tuple[re.Pattern[str], Reply], ...] = (
    (re.compile(r"503 Error: send \S+ first"), replies.EHLO_FIRST),
    (re.compile(r'500 Error: command ".*" not recognized', re.S), replies.UNKNOWN_COMMAND),
    (re.compile(r"421 4\.7\.0 \S+ sent too many times"), replies.TOO_MANY_UNKNOWN),
    (re.compile(r"502 Could not VRFY .*", re.S), replies.MALFORMED_ADDRESS),
    (re.compile(r"501 Syntax: MAIL FROM: <address>.*"), replies.MAIL_SYNTAX),
    (re.compile(r"501 Syntax: RCPT TO: <address>.*"), replies.RCPT_SYNTAX),
    (re.compile(r"501 Supported commands: .*"), replies.HELP_TOPIC),
    (re.compile(r"500 Error: \(.*", re.S), replies.INTERNAL),
)
_TLS_RECORD_HANDSHAKE = 0x16  # the first byte of a TLS ClientHello; no SMTP command starts with it
_DATA_CHUNK = 1 << 20  # read() takes what the stream holds, up to this (flow control keeps it small)


def stock_reply(text: str) -> Reply | None:
    """Our reply for one of aiosmtpd's stock replies; None for any other text (ours, or a success)."""
    reply = _STOCK.get(text)
    if reply is None:
        reply = next((r for pattern, r in _STOCK_PATTERNS if pattern.fullmatch(text)), None)
    return reply


@functools.cache
def scanned_names(cls: type, prefixes: tuple[str, ...]) -> tuple[str, ...]:
    """What ``__dir__`` gives aiosmtpd: it builds its command, AUTH and hook tables from dir(session) and
    dir(handler) on every connection, and inspect.getmembers fetches every attribute on the way."""
    return tuple(sorted(name for name in dir(cls) if name.startswith(prefixes)))


class RelayEnvelope(Envelope):
    """aiosmtpd's envelope with the queue id the MAIL hook gives each transaction (refusals carry it)."""

    def __init__(self) -> None:
        super().__init__()
        self.queue_id: str | None = None


class RelaySession(SMTP):
    # RFC 4954 leaves the LOGIN prompts free; every client and tool expects these two
    AuthLoginUsernameChallenge = "Username:"
    AuthLoginPasswordChallenge = "Password:"

    def __init__(self, relay: Relay, handler: Any, port_label: str, implicit_tls: bool = False) -> None:
        """``implicit_tls``: the listener's transport is TLS already (``RelayServer`` made it with the
        relay's server context); STARTTLS is then neither offered nor needed, and AUTH is offered at once."""
        settings = relay.settings
        limits = settings.limits
        super().__init__(handler, hostname=settings.hostname, ident="ESMTP",
                         tls_context=None if implicit_tls else relay.gen.tls,
                         require_starttls=not implicit_tls, auth_required=True, auth_require_tls=True,
                         data_size_limit=limits.max_message_size, enable_SMTPUTF8=True,
                         timeout=limits.idle_timeout_seconds,
                         auth_exclude_mechanism=[] if relay.gen.policy.cram_md5 else ["CRAM-MD5"])
        if implicit_tls:
            # aiosmtpd knows TLS only from its own STARTTLS; passing auth_require_tls=False would make it
            # warn on every connection. The transport is TLS from the first byte (test_relay_implicit_tls).
            self._auth_require_tls = False
        self.relay = relay
        self.port_label = port_label
        self.implicit_tls = implicit_tls
        self.client_ip = ""
        self._first_bytes = True
        self._framing = LineFraming()
        self._admitted = False
        self.in_data = False
        self._continued: list[bytes] = []  # lines of a multi-line reply not sent yet

    def __dir__(self) -> tuple[str, ...]:
        cls: type = type(self)  # as plain ``type``: mypy takes type[RelaySession] for unhashable
        return scanned_names(cls, ("auth_", "smtp_"))  # ~0.1 ms less per connection

    def _create_envelope(self) -> RelayEnvelope:
        return RelayEnvelope()

    @property
    def connection(self) -> asyncio.Transport | None:
        """``transport``, as the read-write transport it is: aiosmtpd declares a BaseTransport. Not
        checked with isinstance: uvloop's transports do not derive from asyncio's."""
        return cast("asyncio.Transport | None", self.transport)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # aiosmtpd's version defines a typing.Protocol class on every call and has no fast path (smtp_paths)
        addr, rest = parse_path(arg)
        if addr and self.local_part_limit and len(addr.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return addr, rest

    # --- connection life cycle ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None  # called again by aiosmtpd when STARTTLS completes
        super().connection_made(transport)
        assert self.session is not None  # aiosmtpd made it above
        if first and self.implicit_tls:
            # aiosmtpd records TLS only when it did STARTTLS itself; the session's TLS state drives the
            # SourceIP check, the Received field's keyword and the EOF handling
            self.session.ssl = {"ssl_object": transport.get_extra_info("ssl_object"),
                                "peercert": transport.get_extra_info("peercert")}
        if first:
            peer = transport.get_extra_info("peername")
            self.client_ip = str(peer[0]) if peer else ""
            relay = self.relay
            limit = relay.settings.limits.max_connections_per_ip
            self._admitted = not relay.draining and relay.connections[self.client_ip] < limit
            if self._admitted:
                relay.connections[self.client_ip] += 1
                relay.sessions.add(self)
                relay.metrics.sessions.inc()

    def connection_lost(self, error: Exception | None) -> None:
        if self._admitted:
            self._admitted = False
            relay = self.relay
            relay.connections[self.client_ip] -= 1
            if relay.connections[self.client_ip] <= 0:
                del relay.connections[self.client_ip]
            relay.sessions.discard(self)
            relay.metrics.sessions.dec()
        super().connection_lost(error)

    async def _handle_client(self) -> None:
        if not self._admitted:
            reply = replies.SHUTTING_DOWN if self.relay.draining else replies.TOO_MANY_CONNECTIONS
            self.relay.metrics.connections_refused.labels(reply.reason).inc()
            await self.push(reply.smtp)
            if self.transport is not None:
                self.transport.close()
            return
        await super()._handle_client()

    def data_received(self, data: bytes) -> None:
        if self._first_bytes and data:
            self._first_bytes = False
            if data[0] == _TLS_RECORD_HANDSHAKE and not self.implicit_tls and self._tls_protocol is None:
                self._tls_on_starttls_port()
                return
        if self._framing.feed(data):
            super().data_received(data)
            return
        self.relay.metrics.rejected.labels("smtp", replies.BARE_LINE_END.reason).inc()
        log.info("bare line end", extra={"fields": {"event": "rejected", "client_ip": self.client_ip,
                                                     "reason": replies.BARE_LINE_END.reason}})
        transport = self.connection
        if transport is not None and not transport.is_closing():
            transport.write(replies.BARE_LINE_END.smtp.encode() + b"\r\n")
            transport.close()

    def _tls_on_starttls_port(self) -> None:
        reply = replies.TLS_ON_STARTTLS_PORT
        self.relay.metrics.connections_refused.labels(reply.reason).inc()
        log.info("TLS handshake on a STARTTLS port", extra={"fields": {
            "event": reply.reason, "reason": reply.reason, "client_ip": self.client_ip,
            "port": self.port_label, "reply": reply.smtp}})
        if (transport := self.connection) is not None:
            transport.abort()  # nothing to flush: the client reads TLS records, not replies

    def refused(self, reply: Reply, **fields: Any) -> str:
        """The one log line and metric of a protocol refusal; returns the reply line to send."""
        self.relay.metrics.rejected.labels("smtp", reply.reason).inc()
        log.info("command refused", extra={"fields": {"event": "rejected", "source": "smtp",
                                                       "reason": reply.reason, "reply": reply.smtp,
                                                       "client_ip": self.client_ip, "port": self.port_label,
                                                       **fields}})
        return reply.smtp

    def close_if_idle(self) -> bool:
        """Shutdown: end a session between transactions (421 first); True if it was closed."""
        if self.in_data or (self.envelope is not None and self.envelope.mail_from):
            return False
        transport = self.connection
        if transport is not None and not transport.is_closing():
            transport.write(replies.SHUTTING_DOWN.smtp.encode() + b"\r\n")
            transport.close()
        return True

    async def smtp_DATA(self, arg: str) -> None:
        self.in_data = True  # shutdown waits for a message in flight
        try:
            await self._data(arg)
        finally:
            self.in_data = False

    async def _data(self, arg: str) -> None:
        """aiosmtpd 1.4's ``smtp_DATA`` (checks, replies, hook, state, in its order and words) with the
        message read by ``smtp_data.DataReader`` a chunk at a time instead of a line at a time;
        ``tests/relay/test_relay_smtp_data.py`` runs both on the same streams."""
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        data = DataReader(self.line_length_limit, self.data_size_limit)
        while self.transport is not None and not data.done:
            try:
                chunk = await self._reader.read(_DATA_CHUNK)
            except asyncio.CancelledError:
                self._writer.close()  # the connection went away during DATA
                raise
            if not chunk:
                return  # end of stream: the connection is closing
            data.feed(chunk)
        if not data.done:
            return
        if data.rest and not self._reader.at_eof():
            self._reader.feed_data(data.rest)  # the next command: read() took the whole buffer
        if data.state is DataState.TOO_LONG:
            await self.push("500 Line too long (see RFC5321 4.5.3.1.6)")
            self._set_post_data_state()  # type: ignore[no-untyped-call]  # unannotated in aiosmtpd
            return
        if data.state is DataState.TOO_MUCH:
            await self.push("552 Error: Too much mail data")
            self._set_post_data_state()  # type: ignore[no-untyped-call]  # unannotated in aiosmtpd
            return
        # decode_data is never set here: the content stays bytes, as the handler and the spool want
        content = data.message()
        self.envelope.content = self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]  # unannotated in aiosmtpd
        await self.push("250 OK" if status is MISSING else status)

    async def push(self, status: str | bytes) -> None:
        if isinstance(status, str):
            if status[:1] in ("4", "5") and (reply := stock_reply(status)) is not None:
                status = self.refused(reply)
            # aiosmtpd echoes some arguments (VRFY); undecodable client bytes must not crash the reply
            status = status.encode("utf-8", "replace")
        if status[3:4] == b"-":
            # A line of a multi-line reply (EHLO's): held until its last line, so the whole reply goes
            # out in one TLS record and one send, not one per line.
            self._continued.append(status)
            return
        if self._continued:
            status = b"\r\n".join((*self._continued, status))
            self._continued.clear()
        await super().push(status)

    # --- authentication ----------------------------------------------------------------------------
    async def check_auth_needed(self, caller_method: str) -> bool:
        session = self.session
        assert session is not None  # made at connection_made, before any command
        if not session.authenticated and session.ssl is not None:
            cred = source_ip(self.relay, self.client_ip)
            if cred is not None:
                session.authenticated = True
                # aiosmtpd leaves auth_data unannotated (so typed None); it holds what AUTH returns
                session.auth_data = cred.username  # type: ignore[assignment]
        if session.authenticated:
            return False
        await self.push(self.refused(replies.AUTH_REQUIRED, command=caller_method))
        return True

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        blob = await self._initial_or_challenge(args, "")
        if blob is None:
            return AuthResult(success=False, handled=True)
        parts = blob.split(b"\0")
        if len(parts) != 3:
            await self.push(self.refused(replies.AUTH_PLAIN_SPLIT))
            return AuthResult(success=False, handled=True)
        authzid, login, password = parts
        if authzid and authzid != login:  # acting as someone else is not a thing here
            return await self._verified("PLAIN", login, None)
        return await self._verified("PLAIN", login, password)

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        login = await self._initial_or_challenge(args, self.AuthLoginUsernameChallenge)
        if login is None:
            return AuthResult(success=False, handled=True)
        password = await self._challenge(self.AuthLoginPasswordChallenge)
        if password is None:
            return AuthResult(success=False, handled=True)
        return await self._verified("LOGIN", login, password)

    async def auth_CRAM__MD5(self, _: Any, args: list[str]) -> AuthResult:
        if len(args) != 1:
            await self.push(self.refused(replies.CRAM_MD5_NO_INITIAL))
            return AuthResult(success=False, handled=True)
        challenge = f"<{secrets.token_hex(8)}.{int(time.time())}@{self.hostname}>".encode()
        response = await self._challenge(challenge)
        if response is None:
            return AuthResult(success=False, handled=True)
        login, _, digest = response.rpartition(b" ")
        return await self._verified("CRAM-MD5", login, CramMd5(challenge, digest))

    async def _initial_or_challenge(self, args: list[str], prompt: str) -> bytes | None:
        if len(args) == 1:
            return await self._challenge(prompt)
        if args[1] == "=":
            return b""
        try:
            return base64.b64decode(args[1], validate=True)
        except (binascii.Error, ValueError):
            await self.push(self.refused(replies.AUTH_BASE64))
            return None

    async def _challenge(self, prompt: str | bytes) -> bytes | None:
        answer = await self.challenge_auth(prompt)
        return answer if isinstance(answer, bytes) else None

    async def _verified(self, mechanism: str, login: bytes, secret: Secret) -> AuthResult:
        outcome = await authenticate(self.relay, login.decode("utf-8", "replace"), secret, self.client_ip,
                                     mechanism, source="smtp", port=self.port_label)
        if outcome is replies.AUTH_THROTTLED:
            await self.push(outcome.smtp)
            if self.transport is not None:
                self.transport.close()
            return AuthResult(success=False, handled=True)
        if isinstance(outcome, Reply):
            return AuthResult(success=False, handled=False, message=outcome.smtp)
        return AuthResult(success=True, auth_data=outcome.username)
