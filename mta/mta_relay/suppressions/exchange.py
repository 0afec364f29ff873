"""The suppression list between the MTAs of a cluster: the wire format of
``GET /internal/v1/suppressions`` (this module is its one owner) and the pull that keeps every MTA's
copy within about a second of the others' (``Puller``).

Request: ``GET /internal/v1/suppressions?epoch=E&since=S`` with the peer token (as the quota exchange,
``mta_relay.usage``). With the epoch of the answering MTA's list, the rows it changed after change
number ``S``; with none or another epoch, from the start. At most ``PAGE`` rows per answer; ``more``
says to ask again at once: an import of a million entries reaches a peer in two hundred pages asked back to
back, not one page a second (bench/results/suppressions.md).

Answer: ``{"mta": <pod name>, "epoch": E, "seq": <last change number in this page>, "more": bool,
"entries": [[address, reason, source, addedBy, detail, created, expires|null, updated, removed], ...]}``.
Addresses and reply lines only, never a message body.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp

from mta_relay.suppressions.store import Entry, SuppressionStore

if TYPE_CHECKING:
    from mta_relay.usage import Exchange

SUPPRESSIONS_PATH = "/internal/v1/suppressions"
PAGE = 5_000
REQUEST_TIMEOUT = 10.0
log = logging.getLogger("mta_relay.suppressions")


@dataclass(frozen=True)
class Page:
    mta: str
    epoch: str
    seq: int
    more: bool
    entries: list[Entry]


def decode(body: bytes) -> Page:
    """ValueError when the body is not a page of the list."""
    try:
        raw = json.loads(body)
        entries = [Entry(str(a), str(r), str(s), str(b), str(d), float(c), None if x is None else float(x),
                         float(u), bool(rm)) for a, r, s, b, d, c, x, u, rm in raw["entries"]]
        return Page(str(raw["mta"]), str(raw["epoch"]), int(raw["seq"]), bool(raw["more"]), entries)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ValueError(f"not a page of the suppression list: {type(error).__name__}") from None


def answer(store: SuppressionStore, mta: str, params: Mapping[str, str], page: int = PAGE) -> bytes:
    """The body of this MTA's answer (the caller checked the token). Blocking: call it off the loop."""
    try:
        since = int(params.get("since", "0"))
    except ValueError:
        since = 0
    if params.get("epoch") != store.epoch:
        since = 0
    rows, more = store.change_rows(since, page)
    seq = int(rows[-1][0]) if rows else max(since, 0)
    # The rows as the database gives them (the columns are the wire's order): no Entry per row.
    return json.dumps({"mta": mta, "epoch": store.epoch, "seq": seq, "more": more,
                       "entries": [row[1:] for row in rows]}, separators=(",", ":")).encode()


class Puller:
    """Every exchange interval, asks each peer (the quota exchange's list, ``Exchange.peers``) for the rows
    it changed since the last answer, and merges them. A peer that does not answer is asked again next
    time, from where it left off."""

    def __init__(self, store: SuppressionStore, exchange: Exchange, mta: str) -> None:
        self.store, self.exchange, self.mta = store, exchange, mta
        self._since: dict[str, tuple[str, int]] = {}  # peer name → (its epoch, last change number seen)
        self._asking: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None
        self.merged = 0
        self.failures = 0

    async def run(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT))
        try:
            while True:
                settings = self.exchange.relay.settings.quota_exchange
                self.round()
                await asyncio.sleep(settings.interval_seconds if settings else 1.0)
        finally:
            for task in self._asking.values():
                task.cancel()
            await asyncio.gather(*self._asking.values(), return_exceptions=True)
            await self._session.close()

    def round(self) -> None:
        token, pin = self.exchange.relay.peer_token, self.exchange.pin()
        if token is None or pin is None or self._session is None:
            return
        for name, url in self.exchange.peers().items():
            if name not in self._asking:
                self._asking[name] = task = asyncio.get_running_loop().create_task(
                    self._pull(name, url, token, pin))
                task.add_done_callback(lambda _, name=name: self._asking.pop(name, None))

    async def _pull(self, name: str, url: str, token: bytes, pin: aiohttp.Fingerprint) -> None:
        assert self._session is not None
        headers = {"Authorization": "Bearer " + token.decode("utf-8", "replace")}
        while True:
            epoch, since = self._since.get(name, ("", 0))
            params = {"epoch": epoch, "since": str(since)} if epoch else {}
            try:
                async with self._session.get(url + SUPPRESSIONS_PATH, params=params, headers=headers,
                                             ssl=pin) as response:
                    if response.status != 200:
                        raise ValueError(f"answered {response.status}")
                    page = decode(await response.read())
            except (aiohttp.ClientError, TimeoutError, ValueError) as error:
                self.failures += 1
                log.debug("suppression pull failed", extra={"fields": {
                    "event": "suppression_pull_failed", "peer": name, "error": type(error).__name__}})
                return
            if page.epoch == self.store.epoch:
                return  # this MTA itself, at an address listed for another name
            if page.entries:
                self.merged += await asyncio.to_thread(self.store.put, page.entries)
            self._since[page.mta or name] = (page.epoch, page.seq)
            if page.mta and page.mta != name:
                self._since[name] = (page.epoch, page.seq)
            if not page.more:
                return
