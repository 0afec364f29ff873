"""A real receiving SMTP server for tests (aiosmtpd on loopback).

It records every transaction as the next hop saw it and, per connection, every byte the client
sent (decrypted after STARTTLS), so a test can count MAIL FROM commands on the wire to prove that
nothing a sender wrote started a second transaction. Replies are scriptable per stage, e.g.
``receiver.script("data", "451 4.3.0 try later", times=3)`` answers DATA with 451 three times and
then accepts; ``receiver.script("mail", HANG_UP)`` closes the connection instead of answering, and
``receiver.script("mail", ThenHangUp("421 4.7.0 closing"))`` answers and then closes at once, reading
nothing more (as Postfix does after a 421), even commands the client already pipelined. Stage
"greeting" answers a new connection with the reply (e.g. ``421 4.7.0 busy``) and closes it; "ehlo"
answers EHLO with it.

For shaping tests it also keeps the most connections open at once (``peak_connections``), the most
transactions in progress at once, MAIL FROM to the end of DATA (``peak_transactions``), and when each
MAIL FROM arrived (``mail_times``, refused ones too).
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

_LINE_END = re.compile(rb"\r\n|\n|\r")

HANG_UP = "hang up"  # a scripted "reply": close the connection without answering


class ThenHangUp(str):
    """A scripted reply after which the server closes the connection, answering nothing else."""


@dataclass(frozen=True)
class Transaction:
    """One accepted message: envelope, content as received after DATA (dot-unstuffed) and how it came."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    tls: bool
    login: str | None
    local: tuple[str, int]
    at: float  # time.monotonic() when DATA was accepted


@dataclass
class WireLog:
    """Every byte one client sent on one connection, in order."""

    local: tuple[str, int]
    data: bytearray = field(default_factory=bytearray)
    reads: list[bytes] = field(default_factory=list)  # the same bytes as the server read them
    # Per DATA command in order, whether the server took it (354); a refused one (say, 503 after a
    # pipelined DATA whose recipients were all refused) starts no message body.
    data_taken: list[bool] = field(default_factory=list)

    def read_with(self, *verbs: str) -> bool:
        """Whether one read held all of ``verbs``' command lines: the client pipelined them."""
        return any(all(f"\n{verb}".encode() in b"\n" + read.upper() for verb in verbs) for read in self.reads)

    def commands(self, verb: str) -> int:
        """How many ``verb`` commands the most lenient server could read here.

        Lines end at CRLF, lone LF or lone CR alike, and a "." line ends DATA, as a server that is
        sloppy about line ends would see it (the SMTP smuggling attacks); body lines are not commands.
        """
        prefix = verb.upper().encode()
        return sum(1 for line in self._command_lines() if line.upper().startswith(prefix))

    def messages(self) -> int:
        """How many message bodies (content after DATA, ended by a "." line) went out here."""
        return sum(1 for line in self._command_lines() if line == b".")

    def _command_lines(self) -> list[bytes]:
        """The command lines, and the "." that ends each message body (the body itself left out)."""
        lines, in_data, verdicts = [], False, iter(self.data_taken)
        for line in _LINE_END.split(bytes(self.data)):
            if in_data:
                in_data = line != b"."
                if not in_data:
                    lines.append(line)
            else:
                lines.append(line)
                in_data = line.upper() == b"DATA" and next(verdicts, True)
        return lines


class _Handler:
    def __init__(self, receiver: SmtpReceiver) -> None:
        self.receiver = receiver

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          options: list[str]) -> str:
        self.receiver.mail_times.append(time.monotonic())
        reply = _hang_up_on(server, self.receiver._next_reply("mail"))
        if reply is None:
            envelope.mail_from = address
            envelope.mail_options.extend(options)
            self.receiver._transaction(server, True)
            return "250 2.1.0 OK"
        return reply

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        reply = _hang_up_on(server, self.receiver._next_reply("ehlo"))
        if reply is not None:
            return [reply]
        session.host_name = hostname  # this hook's job in aiosmtpd's 5-argument form
        if self.receiver.pipelining:  # aiosmtpd reads pipelined commands; it just does not say so
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.receiver._transaction(server, False)
        return "250 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          options: list[str]) -> str:
        reply = _hang_up_on(server, self.receiver._next_reply(f"rcpt:{address.lower()}")
                            or self.receiver._next_reply("rcpt"))
        if reply is None:
            envelope.rcpt_tos.append(address)
            return "250 2.1.5 OK"
        return reply

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        try:
            return await self._data(server, session, envelope)
        finally:
            self.receiver._transaction(server, False)

    async def _data(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.receiver.data_delay:
            await asyncio.sleep(self.receiver.data_delay)
        reply = _hang_up_on(server, self.receiver._next_reply("data"))
        if reply is not None:
            return reply
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        sock = server.transport.get_extra_info("sockname") if server.transport else ("", 0)
        self.receiver.transactions.append(Transaction(
            mail_from=envelope.mail_from or "", rcpt_tos=tuple(envelope.rcpt_tos),
            data=envelope.original_content or b"", tls=session.ssl is not None, login=login,
            local=(sock[0], sock[1]), at=time.monotonic()))
        return "250 2.0.0 OK queued"


def _hang_up_on(server: SMTP, reply: str | None) -> str | None:
    """For HANG_UP, close the connection: the reply aiosmtpd then writes goes nowhere. For ThenHangUp,
    write the reply first: closing flushes it, and whatever aiosmtpd answers after it goes nowhere."""
    if server.transport is not None and (reply == HANG_UP or isinstance(reply, ThenHangUp)):
        if isinstance(reply, ThenHangUp):
            server.transport.write(f"{reply}\r\n".encode())  # type: ignore[attr-defined]
        server.transport.close()
    return reply


class _RecordingSMTP(SMTP):
    """aiosmtpd's SMTP that also keeps the raw client bytes; after STARTTLS they arrive decrypted."""

    def __init__(self, receiver: SmtpReceiver, **kwargs: Any) -> None:
        super().__init__(_Handler(receiver), **kwargs)
        self._log: WireLog | None = None
        self._receiver = receiver
        self._data_verdict_due = False
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._log is None and (refusal := self._receiver._next_reply("greeting")) is not None:
            # A server refusing the session (busy, throttling): its reply instead of 220, then it closes.
            self._refused = True
            self._receiver.refused_greetings += 1
            if refusal != HANG_UP:
                transport.write(f"{refusal}\r\n".encode())  # type: ignore[attr-defined]
            transport.close()
            return
        if self._log is None:
            sock = transport.get_extra_info("sockname")
            self._log = WireLog(local=(sock[0], sock[1]))
            self._receiver.connections.append(self._log)
            self._receiver._connection(self, True)
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self._receiver._connection(self, False)
        self._receiver._transaction(self, False)
        super().connection_lost(exc)

    async def smtp_DATA(self, arg: str) -> None:
        self._data_verdict_due = True
        await super().smtp_DATA(arg)

    async def push(self, status: AnyStr) -> None:
        if self._data_verdict_due:  # the first reply to DATA: 354, or a refusal
            self._data_verdict_due = False
            assert self._log is not None
            text = status if isinstance(status, str) else status.decode()
            self._log.data_taken.append(text.startswith("354"))
        await super().push(status)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        assert self._log is not None
        self._log.data.extend(data)
        self._log.reads.append(data)
        super().data_received(data)


class SmtpReceiver:
    """``async with SmtpReceiver(host="127.0.0.1") as rx:`` listens on ``rx.host``/``rx.port``.

    ``tls`` (a server SSLContext) offers STARTTLS (required when ``require_tls``); ``users`` turns on
    AUTH PLAIN/LOGIN (required, after TLS). ``pipelining`` offers PIPELINING (RFC 2920), as Postfix
    and the large mailbox providers do.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, tls: ssl.SSLContext | None = None,
                 require_tls: bool = False, users: dict[str, str] | None = None,
                 data_delay: float = 0.0, pipelining: bool = True) -> None:
        self.host, self.port = host, port
        self.pipelining = pipelining
        self.tls, self.require_tls, self.users = tls, require_tls, users
        self.data_delay = data_delay
        self.transactions: list[Transaction] = []
        self.connections: list[WireLog] = []
        self._replies: dict[str, deque[str]] = defaultdict(deque)
        self._server: asyncio.Server | None = None
        self._protocols: list[SMTP] = []
        self.mail_times: list[float] = []
        self._open: set[SMTP] = set()
        self._in_transaction: set[SMTP] = set()
        self.peak_connections = self.peak_transactions = 0
        self.refused_greetings = 0  # connections answered with a scripted "greeting" refusal

    def _connection(self, protocol: SMTP, opened: bool) -> None:
        if opened:
            self._open.add(protocol)
            self.peak_connections = max(self.peak_connections, len(self._open))
        else:
            self._open.discard(protocol)

    def _transaction(self, protocol: SMTP, started: bool) -> None:
        if started:
            self._in_transaction.add(protocol)
            self.peak_transactions = max(self.peak_transactions, len(self._in_transaction))
        else:
            self._in_transaction.discard(protocol)

    def script(self, stage: str, reply: str, times: int = 1) -> None:
        """Answer ``stage`` ("greeting", "ehlo", "mail", "rcpt", "rcpt:<address>", "data") with ``reply``
        (or HANG_UP), ``times`` times."""
        self._replies[stage].extend([reply] * times)

    def unscript(self, stage: str) -> None:
        """Drop the replies still scripted for ``stage``: it is answered normally from now on."""
        self._replies.pop(stage, None)

    def _next_reply(self, stage: str) -> str | None:
        queue = self._replies.get(stage)
        return queue.popleft() if queue else None

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                      data: Any) -> AuthResult:
        ok = (isinstance(data, LoginPassword) and self.users is not None
              and self.users.get(data.login.decode()) == data.password.decode())
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)

    def _protocol(self) -> SMTP:
        protocol = _RecordingSMTP(
            self, hostname="receiver.test", tls_context=self.tls, require_starttls=self.require_tls,
            enable_SMTPUTF8=True, auth_required=self.users is not None,
            auth_require_tls=self.tls is not None,
            authenticator=self._authenticate if self.users is not None else None)
        self._protocols.append(protocol)
        return protocol

    async def start(self) -> SmtpReceiver:
        self._server = await asyncio.get_running_loop().create_server(self._protocol, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def drop_connections(self) -> None:
        """Close every open connection without a word, as a next hop that drops idle clients does."""
        for protocol in self._protocols:
            if protocol.transport is not None:
                protocol.transport.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self.drop_connections()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> SmtpReceiver:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_for(self, count: int, within: float = 10.0) -> list[Transaction]:
        """Wait until at least ``count`` transactions arrived; fail saying how many did otherwise."""
        loop = asyncio.get_running_loop()
        end = loop.time() + within
        while len(self.transactions) < count:
            if loop.time() > end:
                raise AssertionError(f"expected {count} transactions, got {len(self.transactions)}")
            await asyncio.sleep(0.02)
        return self.transactions

    def mail_commands(self) -> int:
        """MAIL FROM commands seen on the wire across all connections."""
        return sum(log.commands("MAIL FROM") for log in self.connections)
