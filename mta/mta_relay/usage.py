"""Usage reports between the MTAs of a cluster, and to the operator: the wire format of
``GET /internal/v1/usage`` (this module is its one owner) and the exchange that keeps every MTA's view of
its peers' counts about a second old (``Exchange``), for the quota that holds for the cluster (``quota``).

Request: ``GET /internal/v1/usage[?epoch=E&since=S]`` with ``Authorization: Bearer <peer token>``. With
the epoch of the answering MTA's run, only the counts changed after change number ``S`` come back (a
peer asks every second; with thousands of credentials a full answer each time would be wasted); without
it, or with another run's epoch, all of them (``full``). An MTA that asks says who and where it is
(``Mta-Peer-Name``, ``Mta-Peer-Url``), so the MTA it asks finds it again at a new address.

Answer: ``{"mta": <pod name>, "epoch": E, "seq": S, "full": bool, "usage": {"<username>": [<period
start>, <count>, <last used>, "<last client address>"]}}`` — the answering MTA's own counts only (what it
accepted itself), never what it heard from others, so nothing is counted twice. Times are Unix seconds.

TLS is pinned to the cluster certificate and the token is the hand-off's (``handoff``); the operator asks
the same endpoint (``reconcile/usage.py``) every few seconds and sums the MTAs' answers into status.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from mta_relay import config_loader, handoff
from mta_relay.peer_rounds import PeerRounds
from mta_relay.quota import Count

if TYPE_CHECKING:
    from mta_relay.relay import Relay

USAGE_PATH = "/internal/v1/usage"
NAME_HEADER = "Mta-Peer-Name"
URL_HEADER = "Mta-Peer-Url"
REQUEST_TIMEOUT = 2.0  # a peer that takes longer is asked again at the next round
LEARNED_SECONDS = 60.0  # an address a peer announced is forgotten when it has not asked for this long
_URL = re.compile(r"^https://[^/\s]+$")
log = logging.getLogger("mta_relay.usage")


@dataclass(frozen=True)
class Report:
    mta: str
    epoch: str
    seq: int
    full: bool
    counts: dict[str, Count]


def encode(mta: str, epoch: str, seq: int, full: bool, counts: Mapping[str, Count]) -> bytes:
    return json.dumps({"mta": mta, "epoch": epoch, "seq": seq, "full": full,
                       "usage": {u: [c.start, c.sent, round(c.last_used, 3), c.last_from]
                                 for u, c in counts.items()}}, separators=(",", ":")).encode()


def decode(body: bytes) -> Report:
    """ValueError when the body is not a usage report."""
    try:
        raw = json.loads(body)
        usage = raw["usage"]
        counts = {str(u): Count(float(e[0]), int(e[1]), float(e[2]), str(e[3])) for u, e in usage.items()}
        return Report(str(raw["mta"]), str(raw["epoch"]), int(raw["seq"]), bool(raw["full"]), counts)
    except (KeyError, TypeError, IndexError, AttributeError) as error:
        raise ValueError(f"not a usage report: {type(error).__name__}") from None


def query(epoch: str | None, since: int) -> dict[str, str]:
    return {"epoch": epoch, "since": str(since)} if epoch else {}


def announced(headers: Mapping[str, str]) -> tuple[str, str] | None:
    """(pod name, URL) an asking peer gave, when both are there and the URL is an https origin."""
    name, url = headers.get(NAME_HEADER, ""), headers.get(URL_HEADER, "")
    if not name or len(name) > 253 or not _URL.match(url) or len(url) > 300:
        return None
    return name, url


class Exchange(PeerRounds):
    """Asks every peer for its counts every ``quotaExchange.intervalSeconds`` and merges them into the
    relay's ``QuotaTracker``. A peer that does not answer keeps the counts it last gave (enforcement goes
    on with them); nothing is ever dropped for not answering."""

    def __init__(self, relay: Relay, self_url: str | None) -> None:
        super().__init__(relay, REQUEST_TIMEOUT)
        self.self_url = self_url  # https://<pod IP>:<port>, announced to the peers; None: not announced
        self.learned: dict[str, tuple[str, float]] = {}  # pod name → (URL, when), from peers that asked
        self._since: dict[str, tuple[str, int]] = {}  # peer name → (its epoch, its last change number)
        self._cert: tuple[Path, float, bytes] | None = None
        self.failures = 0

    def peers(self) -> dict[str, str]:
        """Pod name → URL of every other MTA: the settings' list, then what peers said of themselves."""
        exchange = self.relay.settings.quota_exchange
        found = {p.name: p.url.rstrip("/") for p in exchange.peers} if exchange else {}
        horizon = time.monotonic() - LEARNED_SECONDS
        for name, (url, when) in list(self.learned.items()):
            if when < horizon:
                del self.learned[name]  # gone (scaled down, or moved again): back to the settings' list
            else:
                found[name] = url
        found.pop(self.relay.pod_name or "", None)
        return found

    def learn(self, name: str, url: str) -> None:
        if name != self.relay.pod_name:
            self.learned[name] = (url, time.monotonic())

    async def ask(self, name: str, url: str, token: bytes, pin: aiohttp.Fingerprint) -> None:
        assert self.session is not None
        epoch, since = self._since.get(name, ("", 0))
        headers = {"Authorization": "Bearer " + token.decode("utf-8", "replace")}
        if self.self_url and self.relay.pod_name:
            headers.update({NAME_HEADER: self.relay.pod_name, URL_HEADER: self.self_url})
        try:
            async with self.session.get(url + USAGE_PATH, params=query(epoch, since), headers=headers,
                                        ssl=pin) as response:
                if response.status != 200:
                    raise ValueError(f"answered {response.status}")
                report = decode(await response.read())
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            self.failures += 1
            log.debug("usage exchange failed", extra={"fields": {
                "event": "usage_exchange_failed", "peer": name, "error": type(error).__name__}})
            return
        if report.epoch == self.relay.quota.epoch:
            return  # this MTA itself (at an address the list gave for another name): never a peer
        if report.mta != name and report.mta:
            # The address now belongs to another MTA (a pod moved): count it under its own name.
            name = report.mta
        self.relay.quota.merge(name, report.counts, report.full)
        self._since[name] = (report.epoch, report.seq)

    def pin(self) -> aiohttp.Fingerprint | None:
        """The cluster certificate (the settings' tls.certFile), read again when the file changes."""
        path = config_loader.resolve_path(self.relay.config_dir, self.relay.settings.tls.cert_file)
        try:
            mtime = path.stat().st_mtime
            if self._cert is None or self._cert[:2] != (path, mtime):
                self._cert = (path, mtime, handoff.leaf_certificate(path.read_bytes()))
        except (OSError, ValueError):
            return None
        return handoff.pinned(self._cert[2])


def answer(relay: Relay, params: Mapping[str, str], headers: Mapping[str, str],
           exchange: Exchange | None) -> bytes:
    """The body of this MTA's answer to ``GET /internal/v1/usage`` (the caller checked the token)."""
    if exchange is not None and (peer := announced(headers)) is not None:
        exchange.learn(*peer)
    try:
        since = int(params.get("since", "0"))
    except ValueError:
        since = 0
    full, counts = relay.quota.changes(params.get("epoch") or None, since)
    return encode(relay.pod_name or "", relay.quota.epoch, relay.quota.seq, full, counts)

