"""The results as markdown (pure): a table per scenario, the floor of issue #5 (relay end-to-end msgs/s ≥
Postfix's), where each peer's syncs go, the machine."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from bench.frontdoor.peers import POSTFIX, RELAY

PEER_ORDER = {POSTFIX: 0, RELAY: 1}


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

    @property
    def accepted(self) -> int:
        return int(self.load["messages"])

    @property
    def e2e_rate(self) -> float:
        return self.delivered / self.e2e_seconds if self.e2e_seconds > 0 else 0.0

    def per_message(self, total: float, scale: float = 1.0) -> str:
        return f"{total * scale / self.accepted:.2f}" if self.accepted else "-"


def _mode(per_connection: int) -> str:
    return "1 message per connection" if per_connection == 1 else f"{per_connection} per connection"


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


COLUMNS = ("clients", "peer", "round", "accepted msgs/s", "**end-to-end msgs/s**", "delivered / accepted",
           "drain s", "accept p50 ms", "p50 ms", "p90 ms", "p99 ms", "max ms", "syncs/msg",
           "server CPU ms/msg", "CPU wait ms/msg", "conns to sink", "errors")


def _syncs_per_message(results: list[Result], timed: Result) -> str:
    """From the traced run of the same peer and scenario."""
    for r in results:
        if r.traced and (r.peer, r.per_connection, r.clients) == (timed.peer, timed.per_connection,
                                                                   timed.clients):
            return r.per_message(r.sync_calls or 0)
    return "-"


def _table(results: list[Result], traced: list[Result]) -> list[str]:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---:|---|" + "---:|" * (len(COLUMNS) - 2)]
    for r in results:
        lat = r.latency
        dup = f" (dup {r.duplicates})" if r.duplicates else ""
        cells = (r.clients, r.peer, r.round, f"{r.load['msgs_per_s']:.0f}", f"**{r.e2e_rate:.0f}**",
                 f"{r.delivered} / {r.accepted}{dup}", f"{r.drain_seconds:.1f}", _ms(r.load["p50_ms"]),
                 _ms(lat["p50_ms"]), _ms(lat["p90_ms"]), _ms(lat["p99_ms"]), _ms(lat["max_ms"]),
                 _syncs_per_message(traced, r), r.per_message(r.cpu_seconds, 1000),
                 r.per_message(r.cpu_wait_seconds, 1000), r.connections, r.load["errors"])
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return lines


@dataclass(frozen=True)
class Pooled:
    """A peer's rounds of one scenario together: delivered messages over the summed end-to-end time."""

    rate: float
    rounds: tuple[float, ...]  # each round's end-to-end msgs/s, in the order they ran
    clean: bool  # nothing missing, no client error


def pooled(results: list[Result], peer: str, per_connection: int, clients: int) -> Pooled | None:
    runs = [r for r in results
            if (r.peer, r.per_connection, r.clients) == (peer, per_connection, clients) and not r.traced]
    seconds = sum(r.e2e_seconds for r in runs)
    if not runs or seconds <= 0:
        return None
    return Pooled(sum(r.delivered for r in runs) / seconds, tuple(r.e2e_rate for r in runs),
                  not any(r.missing or r.load["errors"] for r in runs))


def floor(results: list[Result]) -> list[str]:
    """Relay end-to-end msgs/s ≥ Postfix's (rounds pooled), with every accepted message delivered."""
    lines = ["| mode | clients | relay e2e msgs/s | Postfix e2e msgs/s | relay / Postfix | relay rounds "
             "| Postfix rounds | floor met |", "|---|---:|---:|---:|---:|---|---|---|"]
    met = total = 0
    for per_connection, clients in dict.fromkeys((r.per_connection, r.clients) for r in results):
        relay = pooled(results, RELAY, per_connection, clients)
        postfix = pooled(results, POSTFIX, per_connection, clients)
        if relay is None or postfix is None or not postfix.rate:
            continue
        ratio = relay.rate / postfix.rate
        ok = ratio >= 1 and relay.clean
        met, total = met + ok, total + 1
        lines.append(f"| {_mode(per_connection)} | {clients} | {relay.rate:.0f} | {postfix.rate:.0f} "
                     f"| {ratio:.2f} | {_rates(relay.rounds)} | {_rates(postfix.rounds)} "
                     f"| {'yes' if ok else 'no'} |")
    return [*lines, "", f"Floor met in {met} of {total} scenarios."] if total else []


def _rates(rates: tuple[float, ...]) -> str:
    return ", ".join(f"{rate:.0f}" for rate in rates)


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


def render(results: list[Result], machine: dict[str, str], bounds: str, notes: list[str]) -> str:
    out = ["# Delivery benchmark (end to end)", "",
           "STARTTLS + AUTH PLAIN + one 1 KiB message per transaction over loopback, accepted by the peer, "
           "queued (fsync'd) and relayed to a timing SMTP sink; both peers on the same machine in the same "
           "run (`python -m bench.delivery`; see bench/README.md for what each column means).", "",
           f"Bounds per run: {bounds}.", "", "## Machine", "", "| | |", "|---|---|",
           *(f"| {key} | {value} |" for key, value in machine.items()), ""]
    timed, traced = [r for r in results if not r.traced], [r for r in results if r.traced]
    for per_connection in sorted({r.per_connection for r in timed}, reverse=True):
        rows = sorted((r for r in timed if r.per_connection == per_connection),
                      key=lambda r: (r.clients, PEER_ORDER.get(r.peer, len(PEER_ORDER)), r.round))
        out += [f"## {_mode(per_connection).capitalize()}", "", *_table(rows, traced), ""]
    if floor_lines := floor(results):
        out += ["## Floor (issue #5): relay end-to-end msgs/s ≥ Postfix's", "", *floor_lines, ""]
    out += ["## Where the syncs go (traced runs)", "",
            "Counted in a separate run per peer and scenario under strace (the tables' syncs/msg column "
            "comes from it); the timed rounds above run untraced.", "", *sync_breakdown(results), "",
            "Traced runs (slower: strace stops the peer at every sync):", "", *_traced_rates(traced), ""]
    if notes:
        out += ["## Notes", "", *(f"- {note}" for note in notes), ""]
    return "\n".join(out)
