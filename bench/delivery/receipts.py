"""Matching what the load generator got a 250 for with what the sink received (pure): delivered, missing
and duplicate messages, and injection-to-delivery latency per message."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from bench.frontdoor.stats import percentile

CONNECT = "connect"  # the sink's line for a new connection


def complete_lines(data: bytes) -> bytes:
    """The whole lines of ``data``: a last line without its newline is still being written."""
    return data[: data.rfind(b"\n") + 1]


def parse_sink_lines(text: str) -> tuple[list[tuple[int, float]], int]:
    """The sink's ``<seq> <time>`` receipts and its count of ``connect <time>`` lines (whole lines only:
    see complete_lines)."""
    receipts = []
    connections = 0
    for line in text.splitlines():
        first, _, at = line.partition(" ")
        if first == CONNECT:
            connections += 1
        else:
            receipts.append((int(first), float(at)))
    return receipts, connections


@dataclass(frozen=True)
class Matched:
    delivered: int  # accepted messages that reached the sink at least once
    missing: int  # accepted, never received
    duplicates: int  # receipts beyond the first of an accepted message
    unexpected: int  # receipts of messages the client has no 250 for (a bounce, a timed-out 250)
    latencies: list[float]  # seconds from the client's 250 to the first receipt, ascending
    last_receipt: float | None  # time.monotonic() of the last receipt of an accepted message

    def latency_ms(self) -> dict[str, float]:
        return {f"p{q}_ms": round(percentile(self.latencies, q) * 1000, 2) for q in (50, 90, 99)} | {
            "max_ms": round(self.latencies[-1] * 1000, 2) if self.latencies else math.nan}


def match(accepted_at: dict[int, float], receipts: Iterable[tuple[int, float]]) -> Matched:
    first: dict[int, float] = {}
    duplicates = unexpected = 0
    for seq, at in receipts:
        if seq not in accepted_at:
            unexpected += 1
        elif seq in first:
            duplicates += 1
        else:
            first[seq] = at
    latencies = sorted(at - accepted_at[seq] for seq, at in first.items())
    return Matched(len(first), len(accepted_at) - len(first), duplicates, unexpected, latencies,
                   max(first.values(), default=None))
