"""The results as markdown (pure): one table per mode, the floors of issue #4, the machine."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bench.frontdoor.peers import CEILING, POSTFIX, RELAY

CEILING_SHARE = 0.8  # the relay must reach 80% of the bare aiosmtpd ceiling
PEER_ORDER = {CEILING: 0, POSTFIX: 1, RELAY: 2}  # table rows: by clients, then in this order


@dataclass(frozen=True)
class Result:
    peer: str
    per_connection: int
    clients: int
    summary: dict[str, Any]  # Outcome.summary()
    sync_calls: int | None  # None in a timed (untraced) run
    cpu_seconds: float  # the peer's processes, run plus settling (delivery of what it queued)

    @property
    def traced(self) -> bool:
        return self.sync_calls is not None

    @property
    def rate(self) -> float:
        return float(self.summary["msgs_per_s"])

    def per_message(self, total: float, scale: float = 1.0) -> str:
        messages = int(self.summary["messages"])
        return f"{total * scale / messages:.2f}" if messages else "-"


def _mode(per_connection: int) -> str:
    return "one message per connection" if per_connection == 1 else f"{per_connection} per connection"


def _ms(value: Any) -> str:
    return "-" if isinstance(value, float) and math.isnan(value) else f"{value:.1f}"


def _key(r: Result) -> tuple[str, int, int]:
    return r.peer, r.per_connection, r.clients


def _table(results: list[Result], traced: dict[tuple[str, int, int], Result]) -> list[str]:
    lines = ["| clients | peer | msgs/s | p50 ms | p99 ms | fsyncs/msg | server CPU ms/msg "
             "| client CPU ms/msg | errors |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        s = r.summary
        count = traced.get(_key(r))
        fsyncs = count.per_message(count.sync_calls or 0) if count else "-"
        lines.append(f"| {r.clients} | {r.peer} | {r.rate:.0f} | {_ms(s['p50_ms'])} | {_ms(s['p99_ms'])} "
                     f"| {fsyncs} | {r.per_message(r.cpu_seconds, 1000)} "
                     f"| {r.per_message(s['client_cpu_s'], 1000)} | {s['errors']} |")
    return lines


def floors(results: list[Result]) -> list[str]:
    """relay ≥ Postfix and relay ≥ 80% of the ceiling, per scenario; empty when a peer is missing."""
    results = [r for r in results if not r.traced]
    by_key = {_key(r): r for r in results}
    lines = ["| mode | clients | relay msgs/s | Postfix msgs/s | relay / Postfix | ceiling msgs/s "
             "| relay / ceiling | floors met |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    met = total = 0
    for r in results:
        if r.peer != RELAY:
            continue
        postfix = by_key.get((POSTFIX, r.per_connection, r.clients))
        ceiling = by_key.get((CEILING, r.per_connection, r.clients))
        if not postfix or not ceiling or not postfix.rate or not ceiling.rate:
            continue
        vs_postfix, vs_ceiling = r.rate / postfix.rate, r.rate / ceiling.rate
        ok = vs_postfix >= 1 and vs_ceiling >= CEILING_SHARE and not r.summary["errors"]
        met, total = met + ok, total + 1
        lines.append(f"| {_mode(r.per_connection)} | {r.clients} | {r.rate:.0f} | {postfix.rate:.0f} "
                     f"| {vs_postfix:.2f} | {ceiling.rate:.0f} | {vs_ceiling:.2f} "
                     f"| {'yes' if ok else 'no'} |")
    if not total:
        return []
    return [*lines, "", f"Floors met in {met} of {total} scenarios."]


def render(results: list[Result], machine: dict[str, str], bounds: str, notes: list[str]) -> str:
    out = ["# Front-door benchmark", "",
           "STARTTLS + AUTH PLAIN + one 1 KiB message per transaction, over loopback, every peer on the "
           "same machine in the same run (`python -m bench.frontdoor`; see bench/README.md for what each "
           "column means).", "", f"Bounds per scenario: {bounds}.", "", "## Machine", "",
           "| | |", "|---|---|", *(f"| {key} | {value} |" for key, value in machine.items()), ""]
    timed = [r for r in results if not r.traced]
    traced = {_key(r): r for r in results if r.traced}
    for per_connection in sorted({r.per_connection for r in timed}):
        rows = sorted((r for r in timed if r.per_connection == per_connection),
                      key=lambda r: (r.clients, PEER_ORDER.get(r.peer, len(PEER_ORDER))))
        out += [f"## {_mode(per_connection).capitalize()}", "", *_table(rows, traced), ""]
    if traced:
        out += ["## Traced pass (sync counts)", "",
                "Every peer started again under strace, each scenario once more: the fsyncs/msg column above "
                "comes from here. Tracing stops a peer at every sync, so these rates are not the peers' "
                "speed.", "", "| mode | clients | peer | messages | msgs/s under strace | fsyncs/msg |",
                "|---|---:|---|---:|---:|---:|",
                *(f"| {_mode(r.per_connection)} | {r.clients} | {r.peer} | {r.summary['messages']} "
                  f"| {r.rate:.0f} | {r.per_message(r.sync_calls or 0)} |" for r in traced.values()), ""]
    if floor_lines := floors(results):
        out += ["## Floors (issue #4): relay ≥ Postfix, relay ≥ 80% of the aiosmtpd ceiling", "",
                *floor_lines, ""]
    if notes:
        out += ["## Notes", "", *(f"- {note}" for note in notes), ""]
    return "\n".join(out)
