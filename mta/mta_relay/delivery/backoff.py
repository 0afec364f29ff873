"""When to try a deferred message again: exponential backoff with jitter, up to the max retry age."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """``first`` seconds after the first failure, doubling up to ``cap``; give up after ``max_age``."""

    first: float = 300.0
    cap: float = 3600.0
    max_age: float = 5 * 24 * 3600.0

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """Delay after the ``failures``-th failed attempt (1-based).

        Half fixed, half random ("equal jitter"): never sooner than half the step, and messages deferred
        together by one outage spread out instead of returning to the next hop all at once.
        """
        step = min(self.cap, self.first * 2.0 ** max(0, failures - 1))
        uniform = rng.uniform if rng is not None else random.uniform
        return step / 2 + uniform(0, step / 2)

    def expired(self, age: float) -> bool:
        return age >= self.max_age
