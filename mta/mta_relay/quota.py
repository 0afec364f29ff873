"""Per-credential usage and the quota that holds for the whole cluster.

Each MTA counts, per credential and per quota period, the messages it accepted itself (``own``), and
remembers what every peer MTA last said about its own counts (``peers``, filled by ``usage``'s exchange,
about once a second). A message is allowed while ``own + sum(peers' last known) < quota``: the quota holds
for the cluster with no database and no write access to the API, and a credential whose client stays on
one MTA can use its whole quota there.

Tolerance: between two exchanges every other MTA may accept messages this MTA does not know of yet, so
the cluster may go over by at most what the N-1 other MTAs accept in one exchange interval (plus the
time a report takes to arrive); with the MTAs apart (a partition) each enforces with the counts it last
heard, and the overshoot grows with the time apart (docs/relay.md, "Quota shared by the cluster").

Periods are calendar periods in UTC (``period_start``): Hour, Day, Month (the first of the month at
00:00). A credential without a quota is counted per UTC day, for its usage in status.

A message is charged when it is accepted; MAIL FROM only checks, so a failed transaction costs nothing.
The last use (time and client address, the last one only) is recorded once the message is durable.

Counts survive a restart: the relay saves them (``snapshot``) to ``<spool root>/state/quota.json``
(``state_files``: usernames, counts, times and client addresses, nothing secret) at most about once a
second while they change and at shutdown, and loads them at start. A crash loses at most about the last
second of this MTA's own charges; its peers still hold what they last heard from it, and an MTA's counts
of its peers are saved too, so a restarted MTA enforces the cluster's counts before its first exchange.
Counts whose last use is older than ``FORGET_SECONDS`` are dropped when saved.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from mta_relay.config import Quota, QuotaPeriod

DEFAULT_PERIOD: QuotaPeriod = "Day"  # how a credential without a quota is counted (status only)
FORGET_SECONDS = 40 * 86400  # longer than the longest period: an entry this old counts for nothing


def period_start(kind: QuotaPeriod, now: float) -> float:
    """Unix time of the start of the UTC calendar period holding ``now``."""
    t = dt.datetime.fromtimestamp(now, dt.UTC)
    if kind == "Hour":
        start = t.replace(minute=0, second=0, microsecond=0)
    elif kind == "Day":
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return start.timestamp()


def period_end(kind: QuotaPeriod, start: float) -> float:
    """Unix time of the start of the next period after the one starting at ``start``."""
    t = dt.datetime.fromtimestamp(start, dt.UTC)
    if kind == "Hour":
        return start + 3600
    if kind == "Day":
        return start + 86400
    following = t.replace(year=t.year + 1, month=1) if t.month == 12 else t.replace(month=t.month + 1)
    return following.timestamp()


@dataclass
class Count:
    """One credential's messages in one period, as one MTA counted them; ``last_used`` 0 = unknown."""

    start: float  # the period's start (Unix): a count of an earlier period counts for nothing now
    sent: int
    last_used: float = 0.0
    last_from: str = ""
    seq: int = 0  # this MTA's change number of the entry (own counts only), for reports of changes


def kind_of(quota: Quota | None) -> QuotaPeriod:
    return quota.period if quota is not None else DEFAULT_PERIOD


class QuotaTracker:
    def __init__(self, clock: Callable[[], float] = time.time,
                 saved: tuple[dict[str, Count], dict[str, dict[str, Count]]] | None = None,
                 on_change: Callable[[], None] | None = None) -> None:
        """``saved``: own counts and peers' counts loaded after a restart (``state_files``);
        ``on_change`` is called after each change (the relay saves the counts then)."""
        self._clock = clock
        own, peers = saved or ({}, {})
        self.own: dict[str, Count] = dict(own)
        self.peers: dict[str, dict[str, Count]] = {name: dict(counts) for name, counts in peers.items()}
        self._on_change = on_change
        # A new epoch at every start: a peer that asked for changes since a number of the previous run
        # gets everything instead (the numbers start again).
        self.epoch = secrets.token_hex(8)
        self.seq = 0
        for count in self.own.values():
            count.seq = 0

    # --- enforcement -------------------------------------------------------------------------------
    def used(self, username: str, quota: Quota | None) -> int:
        """Messages of the current period, cluster-wide as far as this MTA knows."""
        start = period_start(kind_of(quota), self._clock())
        total = _sent(self.own.get(username), start)
        for counts in self.peers.values():
            total += _sent(counts.get(username), start)
        return total

    def exhausted(self, username: str, quota: Quota | None) -> bool:
        if quota is None or quota.messages == 0:
            return False
        return self.used(username, quota) >= quota.messages

    def charge(self, username: str, quota: Quota | None) -> bool:
        """Count one message if the quota allows it; False (nothing counted) if it is used up. Every
        credential is counted (its usage is reported), with a quota or not."""
        if self.exhausted(username, quota):
            return False
        self._add(username, quota, 1)
        return True

    def refund(self, username: str, quota: Quota | None) -> None:
        """Undo a charge whose message was not accepted after all (the spool failed)."""
        self._add(username, quota, -1)

    def record_use(self, username: str, client_ip: str) -> None:
        """The message is durable: this is the credential's last use (time and client address)."""
        count = self.own.get(username)
        if count is None:
            return
        count.last_used, count.last_from = self._clock(), client_ip
        self._changed(count)

    def _add(self, username: str, quota: Quota | None, delta: int) -> None:
        start = period_start(kind_of(quota), self._clock())
        count = self.own.get(username)
        if count is None:
            count = self.own[username] = Count(start, 0)
        elif count.start != start:
            count.start, count.sent = start, 0
        count.sent = max(0, count.sent + delta)
        self._changed(count)

    def _changed(self, count: Count) -> None:
        self.seq += 1
        count.seq = self.seq
        if self._on_change is not None:
            self._on_change()

    # --- the exchange ------------------------------------------------------------------------------
    def changes(self, epoch: str | None, since: int) -> tuple[bool, dict[str, Count]]:
        """What a peer asks for: (full, counts). Only the counts changed after ``since`` when ``epoch`` is
        this run's; all of them otherwise."""
        if epoch == self.epoch:
            return False, {u: c for u, c in self.own.items() if c.seq > since}
        return True, dict(self.own)

    def merge(self, peer: str, counts: Mapping[str, Count], full: bool) -> None:
        """A peer's own counts, as it reported them: they replace what was known of that peer."""
        known = self.peers.setdefault(peer, {})
        if full:
            known.clear()
        changed = False
        for username, count in counts.items():
            old = known.get(username)
            if old is None or (old.start, old.sent, old.last_used) != (count.start, count.sent,
                                                                        count.last_used):
                known[username] = Count(count.start, count.sent, count.last_used, count.last_from)
                changed = True
        if (changed or full) and self._on_change is not None:
            self._on_change()

    def snapshot(self) -> tuple[dict[str, Count], dict[str, dict[str, Count]]]:
        """Own and peers' counts worth keeping: those used within ``FORGET_SECONDS``."""
        horizon = self._clock() - FORGET_SECONDS
        own = {u: c for u, c in self.own.items() if max(c.last_used, c.start) >= horizon}
        peers = {name: {u: c for u, c in counts.items() if max(c.last_used, c.start) >= horizon}
                 for name, counts in self.peers.items()}
        return own, {name: counts for name, counts in peers.items() if counts}


def _sent(count: Count | None, start: float) -> int:
    return count.sent if count is not None and count.start == start else 0
