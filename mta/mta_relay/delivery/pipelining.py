"""RFC 2920 command pipelining on a connection aiosmtplib opened.

aiosmtplib has one reply in flight at a time: its protocol drops a reply that arrives while an earlier
one waits to be read, so MAIL, RCPT and DATA written together would lose answers. For the length of a
pipelined exchange the connection's transport is lent to ``Replies``, a protocol that queues every
complete reply in order; then it is given back to aiosmtplib's protocol with nothing outstanding, and
aiosmtplib carries on (RSET, the next transaction, QUIT) as if it had sent the commands itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterator
from typing import cast

import aiosmtplib
from aiosmtplib import SMTPReadTimeoutError, SMTPResponse, SMTPResponseException, SMTPServerDisconnected

MAX_REPLY_BYTES = 64 << 10  # one reply's lines together; a server sending more is not an SMTP server


class Replies(asyncio.Protocol):
    """Every complete reply from the server, in order. Flow control and the loss of the connection are
    passed on to the protocol that lent the transport, so its state stays right for when it is back."""

    def __init__(self, owner: asyncio.Protocol, timeout: float | None) -> None:
        self._owner, self._timeout = owner, timeout  # seconds to wait for each reply
        self._buffer = bytearray()
        self._replies: deque[SMTPResponse] = deque()
        self._lines: list[bytes] = []  # the lines so far of a multiline reply
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False

    def data_received(self, data: bytes) -> None:
        self._buffer.extend(data)
        while (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[:end + 1])
            del self._buffer[:end + 1]
            self._line(line)
        if len(self._buffer) > MAX_REPLY_BYTES:
            self._fail(SMTPResponseException(aiosmtplib.SMTPStatus.invalid_response, "Response too long"))
        self._wake()

    def _line(self, line: bytes) -> None:
        code = line[:3]
        if not code.isdigit() or line[3:4] not in (b"-", b" ", b"\r", b"\n", b""):
            self._fail(SMTPResponseException(aiosmtplib.SMTPStatus.invalid_response,
                                             "Malformed SMTP response line"))
            return
        self._lines.append(line[4:].strip(b" \t\r\n"))
        if sum(map(len, self._lines)) > MAX_REPLY_BYTES:
            self._fail(SMTPResponseException(aiosmtplib.SMTPStatus.invalid_response, "Response too long"))
        elif line[3:4] != b"-":
            text = b"\n".join(self._lines).decode("utf-8", "surrogateescape")
            self._replies.append(SMTPResponse(int(code), text))
            self._lines = []

    def eof_received(self) -> bool:
        self._fail(SMTPServerDisconnected("Unexpected EOF received"))
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(SMTPServerDisconnected("Connection lost"))
        self._owner.connection_lost(exc)  # aiosmtplib marks its connection closed

    def pause_writing(self) -> None:
        self._owner.pause_writing()

    def resume_writing(self) -> None:
        self._owner.resume_writing()

    def _fail(self, error: Exception) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    @property
    def pending(self) -> bool:
        """Bytes or replies received and not read: the session is not where the caller thinks."""
        return bool(self._replies or self._buffer or self._lines)

    async def next(self) -> SMTPResponse:
        """The next reply; the connection's failure, or SMTPReadTimeoutError after the timeout."""
        while not self._replies:
            if self._error is not None:
                raise self._error
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            # A timer on the waiter itself: ``asyncio.wait_for`` adds a second future, a callback and,
            # on 3.12, a timeout context to every wait, two or three waits per message.
            timer = loop.call_later(self._timeout, _expire, waiter) if self._timeout is not None else None
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
        return self._replies.popleft()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(SMTPReadTimeoutError("Timed out waiting for server response"))


@contextlib.contextmanager
def lent(smtp: aiosmtplib.SMTP) -> Iterator[tuple[asyncio.WriteTransport, Replies]]:
    """The connection's transport and the replies to what is written on it (each awaited up to the
    connection's command timeout), until the block ends. A
    block that ends with replies unread (an error part way) closes the connection: what the server will
    answer next is no longer known."""
    protocol = smtp.protocol
    transport = protocol.transport if protocol is not None else None
    if protocol is None or transport is None or transport.is_closing():
        raise SMTPServerDisconnected("Connection lost")
    owner = cast(asyncio.Protocol, protocol)
    replies = Replies(owner, smtp.timeout)
    transport.set_protocol(replies)
    clean = False
    try:
        yield cast(asyncio.WriteTransport, transport), replies
        clean = not replies.pending
    finally:
        if not replies.closed:
            transport.set_protocol(owner)
            if not clean:
                smtp.close()
