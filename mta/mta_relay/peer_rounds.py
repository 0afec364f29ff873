"""Rounds of requests to the peer MTAs, every ``quotaExchange.intervalSeconds``: the quota exchange
(``usage.Exchange``) and the suppression list's pull (``suppressions.exchange.Puller``) are both one.

At most one request per peer is in flight: a peer that does not answer (gone, partitioned) costs its
own timeout, never the others' interval. Who the peers are and how their certificate is pinned is the
subclass's (``peers``, ``pin``); what is asked is its ``ask``.
"""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING

import aiohttp

if TYPE_CHECKING:
    from mta_relay.relay import Relay


class PeerRounds:
    def __init__(self, relay: Relay, request_timeout: float) -> None:
        self.relay = relay
        self.request_timeout = request_timeout
        self.session: aiohttp.ClientSession | None = None
        self._asking: dict[str, asyncio.Task[None]] = {}  # peer name → its request in flight
        self.rounds = 0

    def peers(self) -> dict[str, str]:
        """Pod name → base URL of every other MTA."""
        raise NotImplementedError

    def pin(self) -> aiohttp.Fingerprint | None:
        """The cluster certificate's pin; None: not readable, no round."""
        raise NotImplementedError

    async def ask(self, name: str, url: str, token: bytes, pin: aiohttp.Fingerprint) -> None:
        raise NotImplementedError

    async def run(self) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.request_timeout))
        try:
            while True:
                exchange = self.relay.settings.quota_exchange
                self.round()
                await asyncio.sleep(exchange.interval_seconds if exchange else 1.0)
        finally:
            for task in self._asking.values():
                task.cancel()
            await asyncio.gather(*self._asking.values(), return_exceptions=True)
            await self.session.close()

    def round(self) -> None:
        """Ask every peer not still answering the previous question."""
        token, pin = self.relay.peer_token, self.pin()
        if token is None or pin is None or self.session is None:
            return
        for name, url in self.peers().items():
            if name not in self._asking:
                self._asking[name] = task = asyncio.get_running_loop().create_task(
                    self.ask(name, url, token, pin))
                task.add_done_callback(functools.partial(self._answered, name))
        self.rounds += 1

    def _answered(self, name: str, _task: asyncio.Task[None]) -> None:
        self._asking.pop(name, None)
