"""A minimal SMTP submission client on asyncio streams: STARTTLS, AUTH PLAIN, then transactions.

Hand-written rather than aiosmtplib because the generator shares two cores with the server it measures:
every microsecond the client spends is taken from the server. It does what a normal client does (one
command per round trip, no PIPELINING) and checks every reply code.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from dataclasses import dataclass

from bench.frontdoor.certs import SERVER_NAME


class SmtpReplyError(Exception):
    """An unexpected reply. Carries the server's reply only: never the AUTH line or the message."""

    def __init__(self, step: str, code: int, reply: bytes) -> None:
        super().__init__(f"{step}: {reply[:120].decode('ascii', 'replace').strip()}")
        self.code = code


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    username: str
    password: str
    mail_from: str
    rcpt_to: str


class SmtpSession:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, target: Target, tls: ssl.SSLContext) -> SmtpSession:
        reader, writer = await asyncio.open_connection(target.host, target.port)
        session = cls(reader, writer)
        try:
            await session._expect("greeting", 220)
            await session._command(b"EHLO loadgen.localhost\r\n", "EHLO", 250)
            await session._command(b"STARTTLS\r\n", "STARTTLS", 220)
            await writer.start_tls(tls, server_hostname=SERVER_NAME)
            await session._command(b"EHLO loadgen.localhost\r\n", "EHLO after STARTTLS", 250)
            blob = base64.b64encode(f"\0{target.username}\0{target.password}".encode())
            await session._command(b"AUTH PLAIN " + blob + b"\r\n", "AUTH PLAIN", 235)
        except BaseException:
            session.close()
            raise
        return session

    async def send(self, mail_from: str, rcpt_to: str, data: bytes) -> None:
        """One transaction; ``data`` is the dot-stuffed message ending in CRLF."""
        await self._command(f"MAIL FROM:<{mail_from}>\r\n".encode(), "MAIL FROM", 250)
        await self._command(f"RCPT TO:<{rcpt_to}>\r\n".encode(), "RCPT TO", 250)
        await self._command(b"DATA\r\n", "DATA", 354)
        await self._command(data + b".\r\n", "end of data", 250)

    async def quit(self) -> None:
        try:
            await self._command(b"QUIT\r\n", "QUIT", 221)
        finally:
            self.close()

    def close(self) -> None:
        self._writer.close()

    async def _command(self, line: bytes, step: str, expected: int) -> None:
        self._writer.write(line)
        await self._expect(step, expected)

    async def _expect(self, step: str, expected: int) -> None:
        while True:
            line = await self._reader.readline()
            if not line:
                raise SmtpReplyError(step, 0, b"connection closed")
            if line[3:4] != b"-":
                break
        code = int(line[:3]) if line[:3].isdigit() else 0
        if code != expected:
            raise SmtpReplyError(step, code, line)
