"""The per-MTA delivery rate limit (``Cluster.spec.rateLimit``): at most N messages in any period.

A sliding window rather than a fixed one, so no burst of 2N can straddle a window boundary. Mail over
the limit is never rejected: the queue asks when the next slot frees and holds the message until then.
The window lives in memory; after a restart it starts empty (documented in docs/delivery.md).
"""

from __future__ import annotations

from collections import deque


class SlidingWindowLimit:
    """At most ``messages`` starts within any ``period`` seconds. Times are monotonic seconds."""

    def __init__(self, messages: int, period: float) -> None:
        if messages < 1 or period <= 0:
            raise ValueError("a rate limit needs messages >= 1 and a period > 0")
        self.messages = messages
        self.period = period
        self._starts: deque[float] = deque()

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
        return self._starts[0] + self.period
