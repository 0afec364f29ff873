"""The SMTP listeners' life, as every serving process lives it: the listening sockets (made once by the
first process and inherited by the others), serving them with the relay's session, and the graceful end
(not accepting, sessions finish their transaction within the grace time, then the rest is cut)."""

from __future__ import annotations

import asyncio
import functools
import socket
import time
from dataclasses import dataclass

from mta_relay.config import RelaySettings
from mta_relay.relay import Relay
from mta_relay.smtp_handler import SubmissionHandler
from mta_relay.smtp_session import RelaySession

BACKLOG = 511  # connections waiting for an accept: asyncio's 100 overflows at a burst of clients


@dataclass(frozen=True)
class Listener:
    sock: socket.socket
    label: str  # the port clients use (metrics, logs): a Service may map 25 to a container's 2525
    implicit_tls: bool

    def spec(self) -> str:
        """How a serving process is told of an inherited listener: ``fd:label:implicit``."""
        return f"{self.sock.fileno()}:{self.label}:{int(self.implicit_tls)}"

    @classmethod
    def from_spec(cls, spec: str) -> Listener:
        fd, label, implicit = spec.split(":")
        return cls(socket.socket(fileno=int(fd)), label, implicit == "1")


def open_listeners(settings: RelaySettings, listen_address: str | None) -> list[Listener]:
    """Bind every SMTP listener (OSError if a port is taken)."""
    found = []
    try:
        for listener in settings.smtp_listeners:
            address = listen_address or listener.address
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sock = socket.create_server((address, listener.port), family=family, backlog=BACKLOG)
            sock.setblocking(False)
            found.append(Listener(sock, str(listener.public_port or listener.port), listener.implicit_tls))
    except OSError:
        for made in found:
            made.sock.close()
        raise
    return found


async def serve(relay: Relay, listeners: list[Listener]) -> list[asyncio.Server]:
    handler = SubmissionHandler(relay)
    loop = asyncio.get_running_loop()
    servers = []
    for listener in listeners:
        # Implicit TLS (RFC 8314): the listening socket does the handshake, with the server context a
        # reload loads the new certificate into (a listening socket keeps the context it was made with)
        server = await loop.create_server(
            functools.partial(RelaySession, relay, handler, listener.label, listener.implicit_tls),
            sock=listener.sock, ssl=relay.http_tls if listener.implicit_tls else None, backlog=BACKLOG)
        servers.append(server)
    return servers


async def end_sessions(relay: Relay, servers: list[asyncio.Server], deadline: float) -> None:
    """Not ready at once; stop accepting; let sessions finish their transaction until ``deadline`` (a
    monotonic time); then close what is left."""
    relay.draining = True
    relay.readiness()
    for server in servers:
        server.close()
    while relay.sessions and time.monotonic() < deadline:
        for session in list(relay.sessions):
            session.close_if_idle()
        await asyncio.sleep(0.05)
    for session in list(relay.sessions):
        transport = session.connection
        if transport is not None:
            transport.abort()  # grace is over: no TLS close_notify round trip either
    await asyncio.sleep(0.05)  # let the closed sessions' connection_lost run and end their tasks
