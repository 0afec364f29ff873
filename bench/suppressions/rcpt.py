"""RCPT round trips in one SMTP session: EHLO, STARTTLS, EHLO, AUTH PLAIN, MAIL FROM, then recipients in
the list and not in it, alternating, each timed from the command's first byte sent to its reply's last
byte read; RSET and a new MAIL FROM every ``RSET_EVERY`` recipients (the relay takes at most 100 per
message, ``limits.maxRecipients``). Both peers get the same session.

Blocking sockets, one command per round trip, no PIPELINING: the client's own cost per command is the
same few microseconds for both peers and is part of every figure.
"""

from __future__ import annotations

import base64
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.frontdoor.certs import SERVER_NAME

RSET_EVERY = 90
MAIL_FROM = "bench@example.com"  # the relay credential's sending domain (relay_peer.SENDER_DOMAIN)


class UnexpectedReply(AssertionError):
    pass


@dataclass
class SessionTimes:
    listed_us: list[float] = field(default_factory=list)
    unlisted_us: list[float] = field(default_factory=list)
    listed_reply: str = ""  # the first reply to a listed address, as the report quotes it


class _Client:
    def __init__(self, port: int, tls: ssl.SSLContext) -> None:
        self.sock: socket.socket = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")
        self.tls = tls

    def reply(self) -> tuple[int, str]:
        while True:
            line = self.file.readline()
            if not line:
                raise UnexpectedReply("connection closed")
            if line[3:4] != b"-":
                return int(line[:3]), line.decode("ascii", "replace").strip()

    def command(self, line: str, expect: int | None = None) -> tuple[int, str]:
        self.sock.sendall(line.encode() + b"\r\n")
        code, text = self.reply()
        if expect is not None and code != expect:
            raise UnexpectedReply(f"{line.split()[0]}: {text}")
        return code, text

    def starttls(self) -> None:
        self.command("STARTTLS", 220)
        self.file.close()
        self.sock = self.tls.wrap_socket(self.sock, server_hostname=SERVER_NAME)
        self.file = self.sock.makefile("rb")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def session(port: int, tls: ssl.SSLContext, username: str, password: str, listed: list[str],
            unlisted: list[str], *, refused: bool, during: Callable[[], None] = lambda: None) -> SessionTimes:
    """``refused``: whether ``listed`` must be refused (5xx); every unlisted address must get 250.
    ``during`` runs after the last RCPT, with the session still open (memory is sampled there)."""
    client = _Client(port, tls)
    times = SessionTimes()
    try:
        client.reply()
        client.command("EHLO bench.localhost", 250)
        client.starttls()
        client.command("EHLO bench.localhost", 250)
        blob = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
        client.command(f"AUTH PLAIN {blob}", 235)
        client.command(f"MAIL FROM:<{MAIL_FROM}>", 250)
        since_mail = 0
        for pair in zip(listed, unlisted, strict=True):
            for address, in_list in ((pair[0], True), (pair[1], False)):
                if since_mail == RSET_EVERY:
                    client.command("RSET", 250)
                    client.command(f"MAIL FROM:<{MAIL_FROM}>", 250)
                    since_mail = 0
                started = time.perf_counter_ns()
                code, text = client.command(f"RCPT TO:<{address}>")
                spent = (time.perf_counter_ns() - started) / 1000
                since_mail += 1
                if in_list and refused:
                    if not 500 <= code < 600:
                        raise UnexpectedReply(f"RCPT of a suppressed address answered {text!r}")
                    times.listed_reply = times.listed_reply or text
                elif code != 250:
                    raise UnexpectedReply(f"RCPT of an address not suppressed answered {text!r}")
                (times.listed_us if in_list else times.unlisted_us).append(spent)
        during()
        client.command("QUIT")
    finally:
        client.close()
    return times
