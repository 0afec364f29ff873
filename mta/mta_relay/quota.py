"""Per-credential message quotas, shared by the cluster's MTAs.

How the MTAs share a quota: each MTA allows ``ceil(messages / mtas)`` per period, in fixed windows
aligned to the Unix epoch (so every MTA's window starts at the same instant). The Service spreads
connections across MTAs, so the cluster-wide total stays at the quota (at most ``mtas - 1`` over when it
does not divide evenly). It needs no coordination, and it is honest about its limit: an app pinned to one
MTA (one long-lived connection) gets that MTA's share only.

A message is charged when it is accepted; MAIL FROM only checks, so a failed transaction costs nothing.

Counts survive a restart: the relay saves them (``snapshot``) to ``<spool root>/state/quota.json``
(``state_files``; usernames and counts, nothing secret) at most about once a second while they change and
at shutdown, and loads them at start, so a restarted MTA does not give a credential a fresh quota. A crash
loses the charges of at most about the last second: the restarted MTA can accept that many more in the
window. Counts of windows already over are dropped when saved.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from mta_relay.config import Quota


class QuotaTracker:
    def __init__(self, clock: Callable[[], float] = time.time,
                 used: dict[str, tuple[int, int, int]] | None = None,
                 on_change: Callable[[], None] | None = None) -> None:
        """``used``: counts saved before a restart, username → (window, count, period seconds);
        ``on_change`` is called after each change (the relay saves the counts then)."""
        self._clock = clock
        self._used: dict[str, tuple[int, int]] = {}  # username -> (window, count)
        self._periods: dict[str, int] = {}  # username -> period seconds of its window
        for username, (window, count, period) in (used or {}).items():
            self._used[username], self._periods[username] = (window, count), period
        self._on_change = on_change

    @staticmethod
    def share(quota: Quota, mtas: int) -> int:
        return math.ceil(quota.messages / mtas)

    def used(self, username: str, quota: Quota) -> int:
        window = int(self._clock() // quota.period_seconds)
        current = self._used.get(username)
        return current[1] if current and current[0] == window else 0

    def exhausted(self, username: str, quota: Quota | None, mtas: int) -> bool:
        if quota is None or quota.messages == 0:
            return False
        return self.used(username, quota) >= self.share(quota, mtas)

    def charge(self, username: str, quota: Quota | None, mtas: int) -> bool:
        """Count one message if the share allows it; False (nothing counted) if it is used up."""
        if quota is None or quota.messages == 0:
            return True
        if self.exhausted(username, quota, mtas):
            return False
        self._set(username, quota, self.used(username, quota) + 1)
        return True

    def refund(self, username: str, quota: Quota | None) -> None:
        """Undo a charge whose message was not accepted after all (the spool failed)."""
        if quota is None or quota.messages == 0:
            return
        used = self.used(username, quota)
        if used:
            self._set(username, quota, used - 1)

    def _set(self, username: str, quota: Quota, count: int) -> None:
        self._used[username] = (int(self._clock() // quota.period_seconds), count)
        self._periods[username] = quota.period_seconds
        if self._on_change is not None:
            self._on_change()

    def snapshot(self) -> dict[str, tuple[int, int, int]]:
        """The counts of windows not yet over: username → (window, count, period seconds)."""
        now = self._clock()
        return {username: (window, count, self._periods[username])
                for username, (window, count) in self._used.items()
                if window >= int(now // self._periods[username])}
