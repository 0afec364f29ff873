"""Failed-AUTH throttling, per source IP and per username: slow down, then refuse (421).

Failures are counted over a sliding window. From ``authFailuresBeforeDelay`` on, each further attempt
waits longer before it is checked; at ``authFailuresBeforeDisconnect`` the client gets 421 and is
disconnected, until failures age out of the window. Trade-off of the per-username counter: someone who
knows a username can slow its owner's logins down by failing on purpose; the per-IP counter alone would
let a botnet guess one password from many addresses, which is worse. Keys are bounded (LRU).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from mta_relay.config import Limits

_MAX_KEYS = 100_000
_MAX_DELAY = 10.0


@dataclass(frozen=True)
class Verdict:
    disconnect: bool
    delay: float


class AuthThrottle:
    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits  # replaced on reload
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        # Told of each failure seen here, so the pod's other serving processes count it too (``record``).
        self.on_failure: Callable[[str, str], None] | None = None

    def _count(self, key: str) -> int:
        times = self._failures.get(key)
        if not times:
            return 0
        horizon = self._clock() - self.limits.auth_failure_window_seconds
        while times and times[0] < horizon:
            times.popleft()
        return len(times)

    def verdict(self, ip: str, username: str) -> Verdict:
        count = max(self._count(f"ip:{ip}"), self._count(f"user:{username}"))
        if count >= self.limits.auth_failures_before_disconnect:
            return Verdict(True, 0.0)
        over = count - self.limits.auth_failures_before_delay + 1
        delay = min(_MAX_DELAY, over * self.limits.auth_failure_delay_seconds) if over > 0 else 0.0
        return Verdict(False, delay)

    def failed(self, ip: str, username: str) -> None:
        self.record(ip, username)
        if self.on_failure is not None:
            self.on_failure(ip, username)

    def record(self, ip: str, username: str) -> None:
        """A failure, here or in another serving process of the pod."""
        now = self._clock()
        for key in (f"ip:{ip}", f"user:{username}"):
            self._failures.setdefault(key, deque()).append(now)
            self._failures.move_to_end(key)
        while len(self._failures) > _MAX_KEYS:
            self._failures.popitem(last=False)
