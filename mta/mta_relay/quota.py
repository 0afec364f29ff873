"""Per-credential message quotas, shared by the cluster's MTAs.

How the MTAs share a quota: each MTA allows ``ceil(messages / mtas)`` per period, in fixed windows
aligned to the Unix epoch (so every MTA's window starts at the same instant). The Service spreads
connections across MTAs, so the cluster-wide total stays at the quota (at most ``mtas - 1`` over when it
does not divide evenly). It needs no coordination, and it is honest about its limit: an app pinned to one
MTA (one long-lived connection) gets that MTA's share only. Counts are in memory; a restarted MTA starts
its window afresh.

A message is charged when it is accepted; MAIL FROM only checks, so a failed transaction costs nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from mta_relay.config import Quota


class QuotaTracker:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._used: dict[str, tuple[int, int]] = {}  # username -> (window, count)

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
        window = int(self._clock() // quota.period_seconds)
        self._used[username] = (window, self.used(username, quota) + 1)
        return True

    def refund(self, username: str, quota: Quota | None) -> None:
        """Undo a charge whose message was not accepted after all (the spool failed)."""
        if quota is None or quota.messages == 0:
            return
        window = int(self._clock() // quota.period_seconds)
        used = self.used(username, quota)
        if used:
            self._used[username] = (window, used - 1)
