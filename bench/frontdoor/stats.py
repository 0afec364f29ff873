"""Throughput and latency figures of one run (pure)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an ascending list; NaN for an empty one."""
    if not sorted_values:
        return math.nan
    rank = max(math.ceil(q / 100 * len(sorted_values)), 1)
    return sorted_values[rank - 1]


@dataclass
class Outcome:
    """What a run did. Latencies are seconds per message (see loadgen for what they span)."""

    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    client_cpu: float = 0.0
    # seq (the Message-ID's) → time.monotonic() of its 250: CLOCK_MONOTONIC is one clock for every process
    # on the machine, so the delivery bench compares it with the sink's receipt time.
    accepted_at: dict[int, float] = field(default_factory=dict)

    def record_error(self, exc: BaseException) -> None:
        self.errors += 1
        text = f"{type(exc).__name__}: {exc}"[:200]
        if len(self.error_samples) < 5 and text not in self.error_samples:
            self.error_samples.append(text)

    @property
    def messages(self) -> int:
        return len(self.latencies)

    def summary(self) -> dict[str, object]:
        ordered = sorted(self.latencies)
        return {
            "messages": self.messages,
            "errors": self.errors,
            "elapsed_s": round(self.elapsed, 3),
            "msgs_per_s": round(self.messages / self.elapsed, 1) if self.elapsed > 0 else 0.0,
            "p50_ms": round(percentile(ordered, 50) * 1000, 2),
            "p99_ms": round(percentile(ordered, 99) * 1000, 2),
            "client_cpu_s": round(self.client_cpu, 3),
            "error_samples": self.error_samples,
        }
