"""The per-MTA delivery rate limit (``Cluster.spec.rateLimit``): at most N messages in any period.

A sliding window rather than a fixed one, so no burst of 2N can straddle a window boundary. Mail over
the limit is never rejected: the queue asks when the next slot frees and holds the message until then.

The window survives a restart: the queue runner saves its start times as wall-clock times
(``wall_starts``) to ``<spool root>/state/ratelimit.json`` (``state_files``) at most about once a second
while it changes and at drain or stop, and a restarted delivery process ``restore``s them, so a restarted
MTA does not get a fresh window. A crash (kill -9, machine failure) loses the starts made since the last
save, at most about one second of them: the restarted MTA does not count those, so within that period it
can start that many messages over the limit (at most the starts of that last second, never more than
``messages``). A graceful stop loses nothing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable


class SlidingWindowLimit:
    """At most ``messages`` starts within any ``period`` seconds. Times are monotonic seconds."""

    def __init__(self, messages: int, period: float, starts: Iterable[float] = ()) -> None:
        """``starts``: earlier start times (monotonic, oldest first) to carry over, e.g. from the limit
        a reloaded config replaces."""
        if messages < 1 or period <= 0:
            raise ValueError("a rate limit needs messages >= 1 and a period > 0")
        self.messages = messages
        self.period = period
        self._starts: deque[float] = deque(starts)

    @property
    def starts(self) -> list[float]:
        """Start times in the window as last expired (monotonic, oldest first)."""
        return list(self._starts)

    def wall_starts(self, now: float, wall_now: float) -> list[float]:
        """The window's start times as Unix times (``now`` monotonic and ``wall_now`` are the same
        instant), to be saved across a restart, where the monotonic clock means nothing."""
        self._expire(now)
        return [wall_now - (now - t) for t in self._starts]

    def restore(self, wall_starts: Iterable[float], now: float, wall_now: float) -> None:
        """Take saved Unix start times back into the window (after a restart). Those older than the
        period are dropped; one in the future (the wall clock stepped back) counts as now."""
        merged = sorted([*self._starts, *(min(now, now - (wall_now - t)) for t in wall_starts)])
        self._starts = deque(merged)
        self._expire(now)

    def _expire(self, now: float) -> None:
        while self._starts and self._starts[0] <= now - self.period:
            self._starts.popleft()

    def try_acquire(self, now: float) -> bool:
        """Take a slot if one is free at ``now``."""
        self._expire(now)
        if len(self._starts) >= self.messages:
            return False
        self._starts.append(now)
        return True

    def next_free(self, now: float) -> float:
        """The earliest time at which ``try_acquire`` can succeed (``now`` if it can already)."""
        self._expire(now)
        if len(self._starts) < self.messages:
            return now
        # More starts than ``messages`` after a restore or a lowered limit: free once enough expired.
        return self._starts[len(self._starts) - self.messages] + self.period
