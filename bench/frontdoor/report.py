"""The results as markdown (pure): per CPU limit a table of every figure as the median and the spread
(min-max) over the rounds, the ratios the floors need and whether the floors hold, every run, the
traced pass's sync counts, the machine."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.frontdoor.peers import CEILING, POSTFIX, RELAY
from bench.frontdoor.rounds import Check, Floor, FloorRow, Spread, check, cpus_label, floor_table, show

PEER_ORDER = {CEILING: 0, POSTFIX: 1, RELAY: 2}  # table rows: by scenario, then in this order
THROUGHPUT = Floor("msgs/s", POSTFIX, 1.2)
CPU = Floor("server CPU ms/msg", POSTFIX, 0.6, at_least=False)
VS_CEILING = Floor("msgs/s", "the aiosmtpd ceiling", 0.8)
CEILING_SCENARIO = (100, 10)  # (per connection, clients): where the ceiling floor applies


@dataclass(frozen=True)
class Result:
    peer: str
    per_connection: int
    clients: int
    summary: dict[str, Any]  # Outcome.summary()
    sync_calls: int | None  # None in a timed (untraced) run
    cpu_seconds: float  # the peer's processes, run plus settling (delivery of what it queued)
    round: int = 1
    cpus: int | None = None  # the peer's CPU limit in cores; None: none
    load_average: float = math.nan  # the machine's 1-minute load average as the run started

    @property
    def traced(self) -> bool:
        return self.sync_calls is not None

    @property
    def rate(self) -> float:
        return float(self.summary["msgs_per_s"])

    @property
    def messages(self) -> int:
        return int(self.summary["messages"])

    def per_message(self, total: float, scale: float = 1.0) -> str:
        return f"{total * scale / self.messages:.2f}" if self.messages else "-"

    def ms_per_message(self, seconds: float) -> float:
        return seconds * 1000 / self.messages if self.messages else math.nan


def _mode(per_connection: int) -> str:
    return "one message per connection" if per_connection == 1 else f"{per_connection} per connection"


FIGURES: dict[str, Callable[[Result], float]] = {
    "msgs/s": lambda r: r.rate,
    "p50 ms": lambda r: float(r.summary["p50_ms"]),
    "p99 ms": lambda r: float(r.summary["p99_ms"]),
    "server CPU ms/msg": lambda r: r.ms_per_message(r.cpu_seconds),
    "client CPU ms/msg": lambda r: r.ms_per_message(float(r.summary["client_cpu_s"])),
}
DIGITS = {"msgs/s": 0, "p50 ms": 1, "p99 ms": 1, "server CPU ms/msg": 2, "client CPU ms/msg": 2}


def _runs(results: list[Result], peer: str, cpus: int | None, per_connection: int,
          clients: int) -> list[Result]:
    return [r for r in results if not r.traced and (r.peer, r.cpus, r.per_connection, r.clients)
            == (peer, cpus, per_connection, clients)]


def by_round(runs: list[Result], figure: str) -> dict[int, float]:
    return {r.round: FIGURES[figure](r) for r in runs}


def scenarios(results: list[Result]) -> list[tuple[int | None, int, int]]:
    """(CPU limit, per connection, clients) of the timed runs, in the order they ran."""
    return list(dict.fromkeys((r.cpus, r.per_connection, r.clients) for r in results if not r.traced))


def checks(results: list[Result]) -> list[FloorRow]:
    """The floors per CPU limit and scenario: relay msgs/s ≥ 1.2 x Postfix, relay server CPU per message
    ≤ 0.6 x Postfix, and at 100 per connection x 10 clients relay msgs/s ≥ 0.8 x the ceiling."""
    rows = []
    for floor, other in ((THROUGHPUT, POSTFIX), (CPU, POSTFIX), (VS_CEILING, CEILING)):
        figure = "server CPU ms/msg" if floor is CPU else "msgs/s"
        for cpus, per_connection, clients in scenarios(results):
            if floor is VS_CEILING and (per_connection, clients) != CEILING_SCENARIO:
                continue
            relay = _runs(results, RELAY, cpus, per_connection, clients)
            theirs = _runs(results, other, cpus, per_connection, clients)
            if not relay or not theirs:
                continue
            clean = not any(r.summary["errors"] for r in relay)
            found: Check = check(floor, by_round(relay, figure), by_round(theirs, figure), clean=clean)
            rows.append(FloorRow(cpus, _mode(per_connection), clients, found))
    return rows


def _fsyncs(traced: list[Result], peer: str, per_connection: int, clients: int) -> str:
    for r in traced:
        if (r.peer, r.per_connection, r.clients) == (peer, per_connection, clients):
            return r.per_message(r.sync_calls or 0)
    return "-"


def _summary(results: list[Result], cpus: int | None) -> list[str]:
    traced = [r for r in results if r.traced]
    lines = ["| mode | clients | peer | rounds | " + " | ".join(FIGURES) + " | fsyncs/msg | errors |",
             "|---|---:|---|---:|" + "---:|" * (len(FIGURES) + 2)]
    for limit, per_connection, clients in scenarios(results):
        if limit != cpus:
            continue
        present = {r.peer for r in results if not r.traced and r.cpus == cpus}
        for peer in sorted(present, key=lambda p: PEER_ORDER.get(p, len(PEER_ORDER))):
            runs = _runs(results, peer, cpus, per_connection, clients)
            if not runs:
                continue
            cells = [show(Spread.of(FIGURES[f](r) for r in runs), DIGITS[f]) for f in FIGURES]
            errors = sum(int(r.summary["errors"]) for r in runs)
            lines.append(f"| {_mode(per_connection)} | {clients} | {peer} | {len(runs)} | "
                         + " | ".join(cells)
                         + f" | {_fsyncs(traced, peer, per_connection, clients)} | {errors} |")
    return lines


def _every_run(results: list[Result]) -> list[str]:
    lines = ["| CPU limit | mode | clients | round | peer | msgs/s | p50 ms | p99 ms | server CPU ms/msg "
             "| client CPU ms/msg | messages | load average | errors |",
             "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if r.traced:
            continue
        s = r.summary
        lines.append(f"| {cpus_label(r.cpus)} | {_mode(r.per_connection)} | {r.clients} | {r.round} "
                     f"| {r.peer} | {r.rate:.0f} | {_ms(s['p50_ms'])} | {_ms(s['p99_ms'])} "
                     f"| {r.per_message(r.cpu_seconds, 1000)} | {r.per_message(s['client_cpu_s'], 1000)} "
                     f"| {r.messages} | {r.load_average:.1f} | {s['errors']} |")
    return lines


def _ms(value: Any) -> str:
    return "-" if isinstance(value, float) and math.isnan(value) else f"{value:.1f}"


def render(results: list[Result], machine: dict[str, str], bounds: str, notes: list[str],
           processes: dict[str, dict[str, int]] | None = None) -> str:
    out = ["# Front-door benchmark", "",
           "STARTTLS + AUTH PLAIN + one 1 KiB message per transaction, over loopback, every peer on the "
           "same machine in the same run (`python -m bench.frontdoor`; see bench/README.md for what each "
           "column means). Every figure is the median over the rounds, with the lowest and highest round "
           "in brackets; each peer's whole process tree runs under the CPU limit named, the load "
           "generator outside it.", "", f"Bounds: {bounds}.", "", "## Machine", "",
           "| | |", "|---|---|", *(f"| {key} | {value} |" for key, value in machine.items()), ""]
    if floor_lines := floor_table(checks(results)):
        out += ["## Floors", "",
                "Ratios of the relay's median to the other peer's median in the same run and CPU limit; "
                "beside them, the ratio within each round (the peers' runs of a round are seconds apart).",
                "", *floor_lines, ""]
    for cpus in dict.fromkeys(r.cpus for r in results if not r.traced):
        out += [f"## {cpus_label(cpus).capitalize()} per peer", "", *_summary(results, cpus), ""]
    if processes:
        peers = list(dict.fromkeys(p for by_peer in processes.values() for p in by_peer))
        out += ["## Processes per peer", "", "In each peer's tree after its warm-up (the relay's serving "
                "processes and its delivery process; Postfix starts more on demand).", "",
                "| CPU limit | " + " | ".join(peers) + " |", "|---|" + "---:|" * len(peers),
                *(f"| {limit} | " + " | ".join(str(by_peer.get(p, "-")) for p in peers) + " |"
                  for limit, by_peer in processes.items()), ""]
    out += ["## Every run", "", "In the order they ran (the order of the peers rotates every round).", "",
            *_every_run(results), ""]
    traced = [r for r in results if r.traced]
    if traced:
        out += ["## Traced pass (sync counts)", "",
                "Every peer started again, without a CPU limit and under strace, each scenario once more: "
                "the fsyncs/msg column above comes from here. Tracing stops a peer at every sync, so these "
                "rates are not the peers' speed.", "",
                "| mode | clients | peer | messages | msgs/s under strace | fsyncs/msg |",
                "|---|---:|---|---:|---:|---:|",
                *(f"| {_mode(r.per_connection)} | {r.clients} | {r.peer} | {r.messages} "
                  f"| {r.rate:.0f} | {r.per_message(r.sync_calls or 0)} |" for r in traced), ""]
    if notes:
        out += ["## Notes", "", *(f"- {note}" for note in notes), ""]
    return "\n".join(out)
