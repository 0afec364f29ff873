"""Per-destination connection limits and reuse of idle SMTP connections.

A destination is a route's smarthosts or an MX domain. At most ``per_destination`` transactions run
against one destination at once (a backstop: shaping's limits, ``delivery.shaping``, are checked before a
lease is asked for); a connection that finished cleanly waits up to ``idle_timeout`` seconds for the
next message to the same destination, which saves the TCP, TLS and AUTH round trips. A connection
idle for less than ``PROBE_AFTER_IDLE`` is handed out without a NOOP; should it turn out dead at MAIL
FROM, the router runs the transaction once more on a fresh connection (as Postfix does with its cache).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiosmtplib

# Next hops drop idle connections after tens of seconds to minutes (RFC 5321 asks servers to wait 5 min),
# so one used under 2 s ago is almost always alive, and under load connections come back within
# milliseconds: nearly every busy reuse skips the NOOP round trip. Past 2 s the destination is quiet,
# so the probe costs no throughput, and it spares a long-idle connection's first message the retry.
PROBE_AFTER_IDLE = 2.0


@dataclass
class Lease:
    """A slot at a destination, possibly with an idle connection from the pool. Set ``keep`` when it may
    be reused."""

    session: aiosmtplib.SMTP | None = None
    remote: str = ""
    keep: bool = False
    uses: int = 0  # transactions the connection carried (shaping's messages per connection)


@dataclass
class _Idle:
    session: aiosmtplib.SMTP
    remote: str
    since: float
    uses: int = 0


class ConnectionPool:
    def __init__(self, per_destination: int = 10, idle_timeout: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_destination = per_destination
        self.idle_timeout = idle_timeout
        self._clock = clock
        self._slots: dict[str, asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(per_destination))
        self._idle: dict[str, list[_Idle]] = defaultdict(list)
        self.reused = 0  # idle connections handed out again, for tests and metrics
        self._closed = False

    @contextlib.asynccontextmanager
    async def lease(self, destination: str) -> AsyncIterator[Lease]:
        async with self._slots[destination]:
            lease = Lease()
            while self._idle[destination] and lease.session is None:
                idle = self._idle[destination].pop()
                if await self._usable(idle):
                    lease.session, lease.remote, lease.uses = idle.session, idle.remote, idle.uses
                    self.reused += 1
            try:
                yield lease
            finally:
                reusable = lease.keep and not self._closed
                if lease.session is not None and reusable and lease.session.is_connected:
                    self._idle[destination].append(_Idle(lease.session, lease.remote, self._clock(),
                                                         lease.uses))
                elif lease.session is not None:
                    lease.session.close()

    async def _usable(self, idle: _Idle) -> bool:
        if self._clock() - idle.since < PROBE_AFTER_IDLE and idle.session.is_connected:
            return True
        return await _alive(idle.session)

    async def reap(self) -> None:
        """Close connections idle for longer than ``idle_timeout``."""
        cutoff = self._clock() - self.idle_timeout
        for destination, idles in list(self._idle.items()):
            stale = [idle for idle in idles if idle.since <= cutoff]
            self._idle[destination] = [idle for idle in idles if idle.since > cutoff]
            for idle in stale:
                await _quit(idle.session)

    async def close(self) -> None:
        """Close idle connections; connections in use are closed when their lease ends."""
        self._closed = True
        idles = [idle for group in self._idle.values() for idle in group]
        self._idle.clear()
        await asyncio.gather(*(_quit(idle.session) for idle in idles))


async def _alive(session: aiosmtplib.SMTP) -> bool:
    """The next hop may have dropped a long-idle connection; a NOOP finds out before a transaction does."""
    if not session.is_connected:
        return False
    try:
        await session.noop(timeout=10)
    except (aiosmtplib.SMTPException, OSError):
        session.close()
        return False
    return True


async def _quit(session: aiosmtplib.SMTP) -> None:
    try:
        await session.quit(timeout=5)
    except (aiosmtplib.SMTPException, OSError):
        session.close()
