"""The events throughput benchmark's results as markdown (pure): per scenario each peer's end-to-end
msgs/s as median (min-max) over its rounds, CPU per message, what the webhooks' receiver saw (every
event there? events/s, lag after the last delivery), the relative cost of webhooks against the relay
without one and the floor (at most 10%), the event store's size per message, every run."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from bench.delivery.report import Result
from bench.frontdoor.peers import POSTFIX

FLOOR = 0.90  # webhooks on: at least this share of the relay's msgs/s without one
BASELINE = "relay, no webhook"


@dataclass
class HookFigures:
    """One webhook in one run."""

    expected: int  # events the run's accepted messages made for this webhook
    received: int  # of those, at the receiver (each counted once)
    duplicates: int  # copies beyond the first (a batch resent)
    last_arrival: float  # time.monotonic() of the last of them at the receiver; NaN for none
    events_per_s: float = math.nan  # received / (run start → last arrival)
    lag_ms: float = math.nan  # last arrival - the last message at the sink

    def set_times(self, started: float, last_receipt: float) -> None:
        if not math.isnan(self.last_arrival):
            span = self.last_arrival - started
            self.events_per_s = round(self.received / span, 1) if span > 0 else math.nan
            self.lag_ms = round((self.last_arrival - last_receipt) * 1000, 1)


@dataclass(frozen=True)
class Row:
    result: Result  # the delivery benchmark's figures of the run (CPU covers the webhooks' catching up)
    hooks: dict[str, HookFigures]  # by webhook name; empty for peers without one
    receiver_cpu_seconds: float  # the receiver process during the run, for all its webhooks


@dataclass(frozen=True)
class StoreFigures:
    """A relay's event store after the run (its relay stopped, the WAL checkpointed)."""

    messages: int  # accepted over the whole run, warm-up included
    events: int
    bytes: int  # the database and its -wal and -shm files
    log_bytes: int  # the relay's log (stderr: a JSON line per event and per message)


def _spread(values: list[float], digits: int = 0) -> str:
    if not values:
        return "-"
    fmt = f"{{:.{digits}f}}"
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def _mode(per_connection: int, clients: int) -> str:
    per = "1 message per connection" if per_connection == 1 else f"{per_connection} per connection"
    return f"{clients} clients, {per}"


def _scenarios(rows: list[Row]) -> list[tuple[int, int]]:
    return list(dict.fromkeys((row.result.per_connection, row.result.clients) for row in rows))


def _scenario_rows(rows: list[Row], per_connection: int, clients: int) -> dict[str, list[Row]]:
    found: dict[str, list[Row]] = {}
    for row in rows:
        r = row.result
        if (r.per_connection, r.clients) == (per_connection, clients):
            found.setdefault(r.peer, []).append(row)
    # the relay without a webhook first (the others are measured against it), Postfix last
    return dict(sorted(found.items(), key=lambda item: (item[0] == POSTFIX, item[0] != BASELINE, item[0])))


def _hooks_cell(runs: list[Row], pick: str) -> str:
    names = list(dict.fromkeys(n for row in runs for n in row.hooks))
    if not names:
        return "-"
    cells = []
    for name in names:
        figs = [row.hooks[name] for row in runs if name in row.hooks]
        if pick == "received":
            dup = sum(f.duplicates for f in figs)
            cells.append(f"{name} {sum(f.received for f in figs)} / {sum(f.expected for f in figs)}"
                         + (f" (dup {dup})" if dup else ""))
        elif pick == "rate":
            cells.append(f"{name} {_spread([f.events_per_s for f in figs])}")
        else:
            cells.append(f"{name} {_spread([f.lag_ms for f in figs])}")
    return "; ".join(cells)


def _receiver_cpu(runs: list[Row]) -> str:
    events = sum(h.received for row in runs for h in row.hooks.values())
    seconds = sum(row.receiver_cpu_seconds for row in runs)
    return f"{seconds * 1e6 / events:.0f}" if events else "-"


def scenario_table(rows: list[Row], per_connection: int, clients: int) -> list[str]:
    by_peer = _scenario_rows(rows, per_connection, clients)
    base = _median([row.result.e2e_rate for row in by_peer.get(BASELINE, [])])
    lines = ["| peer | **end-to-end msgs/s** median (min-max) | vs no webhook | accepted msgs/s | "
             "server CPU ms/msg | CPU wait ms/msg | delivered / accepted | events at receiver / expected | "
             "events/s at receiver | lag after last delivery ms | receiver CPU µs/event | errors |",
             "|---|---:|---:|---:|---:|---:|---:|---|---|---|---:|---:|"]
    for peer, runs in by_peer.items():
        results = [row.result for row in runs]
        rates = [r.e2e_rate for r in results]
        versus = f"{_median(rates) / base - 1:+.1%}" if base and peer != POSTFIX else "-"
        cpu = [1000 * r.cpu_seconds / r.accepted for r in results if r.accepted]
        wait = [1000 * r.cpu_wait_seconds / r.accepted for r in results if r.accepted]
        dup = sum(r.duplicates for r in results)
        accepted = [r.load["msgs_per_s"] for r in results]
        mail = f"{sum(r.delivered for r in results)} / {sum(r.accepted for r in results)}"
        lines.append(
            f"| {peer} | **{_spread(rates)}** | {versus} | {_spread(accepted)} "
            f"| {_spread(cpu, 2)} | {_spread(wait, 2)} | {mail}{f' (dup {dup})' if dup else ''} "
            f"| {_hooks_cell(runs, 'received')} "
            f"| {_hooks_cell(runs, 'rate')} | {_hooks_cell(runs, 'lag')} | {_receiver_cpu(runs)} "
            f"| {sum(r.load['errors'] for r in results)} |")
    return lines


def floor(rows: list[Row]) -> list[str]:
    """Webhooks on: relay median e2e msgs/s ≥ FLOOR x without one, every message and event through."""
    lines = ["| scenario | relay | median msgs/s | no webhook | ratio | per-round ratios, median (min-max) "
             "| CPU ms/msg vs no webhook | all mail and events through | floor met |",
             "|---|---|---:|---:|---:|---:|---:|---|---|"]
    met = total = 0
    for per_connection, clients in _scenarios(rows):
        by_peer = _scenario_rows(rows, per_connection, clients)
        base_runs = [row.result for row in by_peer.get(BASELINE, [])]
        base = _median([r.e2e_rate for r in base_runs])
        base_cpu = _median([1000 * r.cpu_seconds / r.accepted for r in base_runs if r.accepted])
        for peer, runs in by_peer.items():
            if peer in (POSTFIX, BASELINE) or not base:
                continue
            results = [row.result for row in runs]
            rate = _median([r.e2e_rate for r in results])
            cpu = _median([1000 * r.cpu_seconds / r.accepted for r in results if r.accepted])
            clean = all(not r.missing and not r.load["errors"] for r in results) and all(
                h.received == h.expected for row in runs for h in row.hooks.values())
            ok = rate / base >= FLOOR and clean
            met, total = met + ok, total + 1
            by_round = {r.round: r.e2e_rate for r in base_runs}
            paired = [r.e2e_rate / by_round[r.round] for r in results if by_round.get(r.round)]
            lines.append(f"| {_mode(per_connection, clients)} | {peer} | {rate:.0f} | {base:.0f} "
                         f"| {rate / base:.2f} | {_spread(paired, 2)} "
                         f"| {cpu - base_cpu:+.2f} ({cpu / base_cpu - 1:+.0%}) "
                         f"| {'yes' if clean else 'no'} | {'yes' if ok else 'no'} |")
    return [*lines, "", f"Floor met in {met} of {total}."] if total else []


def store_table(stores: dict[str, StoreFigures]) -> list[str]:
    lines = ["| relay | messages accepted | events stored | events/message | store on disk MiB | "
             "**store bytes/message** | bytes/event | relay log bytes/message |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for peer, s in stores.items():
        if not s.messages or not s.events:
            continue
        lines.append(f"| {peer} | {s.messages} | {s.events} | {s.events / s.messages:.2f} "
                     f"| {s.bytes / 2**20:.1f} | **{s.bytes / s.messages:.0f}** | {s.bytes / s.events:.0f} "
                     f"| {s.log_bytes / s.messages:.0f} |")
    return lines


def runs_table(rows: list[Row]) -> list[str]:
    lines = ["| scenario | peer | round | accepted | e2e msgs/s | drain s | server CPU ms/msg "
             "| events received / expected | lag ms |", "|---|---|---:|---:|---:|---:|---:|---|---|"]
    for row in rows:
        r = row.result
        hooks = "; ".join(f"{n} {h.received}/{h.expected}" for n, h in row.hooks.items()) or "-"
        lags = "; ".join(f"{n} {h.lag_ms:.0f}" for n, h in row.hooks.items()) or "-"
        lines.append(f"| {_mode(r.per_connection, r.clients)} | {r.peer} | {r.round} | {r.accepted} "
                     f"| {r.e2e_rate:.0f} | {r.drain_seconds:.1f} | {r.per_message(r.cpu_seconds, 1000)} "
                     f"| {hooks} | {lags} |")
    return lines


def render(rows: list[Row], stores: dict[str, StoreFigures], machine: dict[str, str], bounds: str,
           notes: list[str], hooks: dict[str, list[dict[str, Any]]]) -> str:
    out = ["# Events throughput benchmark: what delivery events cost end to end", "",
           "STARTTLS + AUTH PLAIN + one 1 KiB message (one recipient) per transaction over loopback, "
           "accepted, queued and relayed to a timing SMTP sink, as in `bench.delivery`; the relay in three "
           "event configurations and Postfix on the same machine in the same run (`python -m "
           "bench.events.throughput`; bench/README.md says what each column means). Every relay writes its "
           "event log line and its event store (always on); the webhooks post to an HTTPS receiver "
           "(`bench/events/receiver.py`) that verifies each signature and answers 204. A run ends when the "
           "sink has every accepted message and the receiver every event they made.", "",
           f"Bounds: {bounds}.", "", "Webhooks per relay:", "",
           *(f"- {peer}: " + (", ".join(f"`{h['name']}` ({', '.join(h['types']) or 'every event'})"
                                        for h in hs) or "none") for peer, hs in hooks.items()), ""]
    for per_connection, clients in _scenarios(rows):
        table = scenario_table(rows, per_connection, clients)
        out += [f"## {_mode(per_connection, clients)}", "", *table, ""]
    if floor_lines := floor(rows):
        out += [f"## Floor: webhooks cost at most {1 - FLOOR:.0%} of the relay's end-to-end msgs/s", "",
                "Median of each relay's rounds against the median of the relay without a webhook, same "
                "scenario (the floor's figure); beside it the ratio within each round, where the two ran "
                "minutes apart at most. Every accepted message at the sink and every event at the receiver.",
                "",
                *floor_lines, ""]
    out += ["## Event store on disk after the run", "",
            "Each relay's `events/events.db` (+ WAL after a checkpoint) once the relay stopped, over "
            "everything it accepted in the run (warm-up included); outbox rows are deleted as the receiver "
            "takes them, their pages stay in the file for reuse.", "", *store_table(stores), "",
            "## Every run", "", *runs_table(rows), "", "## Machine", "", "| | |", "|---|---|",
            *(f"| {key} | {value} |" for key, value in machine.items()), ""]
    if notes:
        out += ["## Notes", "", *(f"- {note}" for note in notes), ""]
    return "\n".join(out)
