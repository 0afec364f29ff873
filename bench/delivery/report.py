"""The results as markdown (pure): per CPU limit every figure as the median and the spread (min-max) over
the rounds, the floors (relay end-to-end msgs/s ≥ 1.2 x Postfix's, relay CPU per message ≤ 0.6 x
Postfix's) from the medians with each round's ratio beside them, every run, where each peer's syncs go,
the machine."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.frontdoor.peers import POSTFIX, RELAY
from bench.frontdoor.rounds import Floor, FloorRow, Spread, check, cpus_label, floor_table, show

PEER_ORDER = {POSTFIX: 0, RELAY: 1}
END_TO_END = Floor("end-to-end msgs/s", POSTFIX, 1.2)
CPU = Floor("server CPU ms/msg", POSTFIX, 0.6, at_least=False)


@dataclass(frozen=True)
class Result:
    peer: str
    per_connection: int
    clients: int
    round: int
    load: dict[str, Any]  # Outcome.summary(): the injection side
    delivered: int  # accepted messages that reached the sink
    missing: int
    duplicates: int
    unexpected: int  # sink receipts without a 250 at the client (bounces, a 250 lost to a timeout)
    e2e_seconds: float  # injection start → the last accepted message at the sink
    drain_seconds: float  # injection end → the last accepted message at the sink
    latency: dict[str, float]  # the client's 250 → the sink's receipt: p50_ms, p90_ms, p99_ms, max_ms
    sync_calls: int | None  # run and drain: acceptance, delivery and removal; None in a timed run
    sync_targets: dict[str, int]  # calls per target (bench.delivery.syncs)
    sync_seconds: dict[str, float]  # time inside those calls per target
    connections: int  # SMTP connections the peer opened to the sink, run and drain
    cpu_seconds: float  # the peer's processes, run and drain
    cpu_wait_seconds: float  # its threads' time runnable but waiting for a CPU (bench.delivery.sched)
    traced: bool = False  # the peer ran under strace: for its sync figures, not for its speed
    cpus: int | None = None  # the peer's CPU limit in cores; None: none
    load_average: float = math.nan  # the machine's 1-minute load average as the run started

    @property
    def accepted(self) -> int:
        return int(self.load["messages"])

    @property
    def e2e_rate(self) -> float:
        return self.delivered / self.e2e_seconds if self.e2e_seconds > 0 else 0.0

    def per_message(self, total: float, scale: float = 1.0) -> str:
        return f"{total * scale / self.accepted:.2f}" if self.accepted else "-"

    def ms_per_message(self, seconds: float) -> float:
        return seconds * 1000 / self.accepted if self.accepted else math.nan


def _mode(per_connection: int) -> str:
    return "1 message per connection" if per_connection == 1 else f"{per_connection} per connection"


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


COLUMNS = ("CPU limit", "mode", "clients", "peer", "round", "accepted msgs/s", "**end-to-end msgs/s**",
           "delivered / accepted", "drain s", "accept p50 ms", "p50 ms", "p90 ms", "p99 ms", "max ms",
           "syncs/msg", "server CPU ms/msg", "CPU wait ms/msg", "conns to sink", "load average", "errors")


def _syncs_per_message(results: list[Result], peer: str, per_connection: int, clients: int) -> str:
    """From the traced run of the same peer and scenario."""
    for r in results:
        if r.traced and (r.peer, r.per_connection, r.clients) == (peer, per_connection, clients):
            return r.per_message(r.sync_calls or 0)
    return "-"


def _every_run(results: list[Result], traced: list[Result]) -> list[str]:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---|---|---:|---|" + "---:|" * (len(COLUMNS) - 4)]
    for r in results:
        lat = r.latency
        dup = f" (dup {r.duplicates})" if r.duplicates else ""
        cells = (cpus_label(r.cpus), _mode(r.per_connection), r.clients, r.peer, r.round,
                 f"{r.load['msgs_per_s']:.0f}", f"**{r.e2e_rate:.0f}**", f"{r.delivered} / {r.accepted}{dup}",
                 f"{r.drain_seconds:.1f}",
                 _ms(r.load["p50_ms"]), _ms(lat["p50_ms"]), _ms(lat["p90_ms"]), _ms(lat["p99_ms"]),
                 _ms(lat["max_ms"]), _syncs_per_message(traced, r.peer, r.per_connection, r.clients),
                 r.per_message(r.cpu_seconds, 1000), r.per_message(r.cpu_wait_seconds, 1000), r.connections,
                 f"{r.load_average:.1f}", r.load["errors"])
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return lines


FIGURES: dict[str, tuple[Callable[[Result], float], int]] = {
    "**end-to-end msgs/s**": (lambda r: r.e2e_rate, 0),
    "accepted msgs/s": (lambda r: float(r.load["msgs_per_s"]), 0),
    "server CPU ms/msg": (lambda r: r.ms_per_message(r.cpu_seconds), 2),
    "CPU wait ms/msg": (lambda r: r.ms_per_message(r.cpu_wait_seconds), 2),
    "accept p50 ms": (lambda r: float(r.load["p50_ms"]), 1),
    "p50 ms": (lambda r: r.latency["p50_ms"], 1),
    "p99 ms": (lambda r: r.latency["p99_ms"], 1),
    "drain s": (lambda r: r.drain_seconds, 1),
}


def runs_of(results: list[Result], peer: str, cpus: int | None, per_connection: int,
            clients: int) -> list[Result]:
    return [r for r in results if not r.traced
            and (r.peer, r.cpus, r.per_connection, r.clients) == (peer, cpus, per_connection, clients)]


def scenarios(results: list[Result]) -> list[tuple[int | None, int, int]]:
    """(CPU limit, per connection, clients) of the timed runs, in the order they ran."""
    return list(dict.fromkeys((r.cpus, r.per_connection, r.clients) for r in results if not r.traced))


def _summary(results: list[Result], cpus: int | None) -> list[str]:
    traced = [r for r in results if r.traced]
    lines = ["| mode | clients | peer | rounds | " + " | ".join(FIGURES)
             + " | delivered / accepted | syncs/msg | errors |",
             "|---|---:|---|---:|" + "---:|" * (len(FIGURES) + 3)]
    for limit, per_connection, clients in scenarios(results):
        if limit != cpus:
            continue
        syncs = {peer: _syncs_per_message(traced, peer, per_connection, clients) for peer in PEER_ORDER}
        for peer in PEER_ORDER:
            runs = runs_of(results, peer, cpus, per_connection, clients)
            if not runs:
                continue
            cells = [show(Spread.of(figure(r) for r in runs), digits) for figure, digits in FIGURES.values()]
            delivered, accepted = sum(r.delivered for r in runs), sum(r.accepted for r in runs)
            errors = sum(int(r.load["errors"]) for r in runs)
            lines.append(f"| {_mode(per_connection)} | {clients} | {peer} | {len(runs)} | "
                         + " | ".join(cells) + f" | {delivered} / {accepted} | {syncs[peer]} | {errors} |")
    return lines


def checks(results: list[Result]) -> list[FloorRow]:
    """Per CPU limit and scenario: relay end-to-end msgs/s ≥ 1.2 x Postfix's with every accepted message
    delivered and no client error; relay server CPU per message ≤ 0.6 x Postfix's."""
    rows = []
    for floor, figure in ((END_TO_END, "**end-to-end msgs/s**"), (CPU, "server CPU ms/msg")):
        value = FIGURES[figure][0]
        for cpus, per_connection, clients in scenarios(results):
            relay = runs_of(results, RELAY, cpus, per_connection, clients)
            postfix = runs_of(results, POSTFIX, cpus, per_connection, clients)
            if not relay or not postfix:
                continue
            clean = not any(r.missing or r.load["errors"] for r in relay)
            found = check(floor, {r.round: value(r) for r in relay}, {r.round: value(r) for r in postfix},
                          clean=clean)
            rows.append(FloorRow(cpus, _mode(per_connection), clients, found))
    return rows


def sync_breakdown(results: list[Result]) -> list[str]:
    """Per peer, over its traced runs: sync calls and time inside them, per accepted message, by target."""
    lines = ["| peer | call and target | calls per message | ms per call | ms per message |",
             "|---|---|---:|---:|---:|"]
    for peer in sorted({r.peer for r in results}, key=lambda p: PEER_ORDER.get(p, len(PEER_ORDER))):
        runs = [r for r in results if r.peer == peer and r.traced]
        accepted = sum(r.accepted for r in runs)
        calls: Counter[str] = Counter()
        seconds: Counter[str] = Counter()
        for r in runs:
            calls.update(r.sync_targets)
            seconds.update(r.sync_seconds)
        lines += [f"| {peer} | {target} | {count / accepted:.2f} | {1000 * seconds[target] / count:.2f} "
                  f"| {1000 * seconds[target] / accepted:.2f} |"
                  for target, count in calls.most_common() if accepted]
    return lines


def _traced_rates(traced: list[Result]) -> list[str]:
    lines = ["| mode | clients | peer | accepted | end-to-end msgs/s | syncs/msg |",
             "|---|---:|---|---:|---:|---:|"]
    for r in traced:
        lines.append(f"| {_mode(r.per_connection)} | {r.clients} | {r.peer} | {r.accepted} "
                     f"| {r.e2e_rate:.0f} | {r.per_message(r.sync_calls or 0)} |")
    return lines


def render(results: list[Result], machine: dict[str, str], bounds: str, notes: list[str],
           processes: dict[str, dict[str, int]] | None = None) -> str:
    out = ["# Delivery benchmark (end to end)", "",
           "STARTTLS + AUTH PLAIN + one 1 KiB message per transaction over loopback, accepted by the peer, "
           "queued (fsync'd) and relayed to a timing SMTP sink; both peers on the same machine in the same "
           "run (`python -m bench.delivery`; see bench/README.md for what each column means). Every figure "
           "is the median over the rounds, with the lowest and highest round in brackets; each peer's whole "
           "process tree runs under the CPU limit named, the load generator and the sink outside it.", "",
           f"Bounds: {bounds}.", "", "## Machine", "", "| | |", "|---|---|",
           *(f"| {key} | {value} |" for key, value in machine.items()), ""]
    timed, traced = [r for r in results if not r.traced], [r for r in results if r.traced]
    if floor_lines := floor_table(checks(results)):
        out += ["## Floors", "",
                "Ratios of the relay's median to Postfix's median in the same run and CPU limit; beside "
                "them, the ratio within each round (the two peers' runs of a round are seconds apart). The "
                "end-to-end floor also needs every accepted message at the sink and no client error.", "",
                *floor_lines, ""]
    for cpus in dict.fromkeys(r.cpus for r in timed):
        out += [f"## {cpus_label(cpus).capitalize()} per peer", "", *_summary(results, cpus), ""]
    if processes:
        out += ["## Processes per peer", "", "In each peer's tree after its warm-up.", "",
                "| CPU limit | " + " | ".join(PEER_ORDER) + " |", "|---|" + "---:|" * len(PEER_ORDER),
                *(f"| {limit} | " + " | ".join(str(by_peer.get(p, "-")) for p in PEER_ORDER) + " |"
                  for limit, by_peer in processes.items()), ""]
    out += ["## Every run", "", "In the order they ran (the order of the peers rotates every round).", "",
            *_every_run(timed, traced), ""]
    out += ["## Where the syncs go (traced runs)", "",
            "Counted in a separate run per peer and scenario, without a CPU limit and under strace (the "
            "syncs/msg columns come from it); the timed rounds above run untraced.", "",
            *sync_breakdown(results), "",
            "Traced runs (slower: strace stops the peer at every sync):", "", *_traced_rates(traced), ""]
    if notes:
        out += ["## Notes", "", *(f"- {note}" for note in notes), ""]
    return "\n".join(out)
