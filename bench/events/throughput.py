"""``python -m bench.events.throughput [--quick] [--keep]``: what delivery events cost the relay's
end-to-end throughput. The delivery benchmark's pipeline (``bench.delivery.run``: load generator, timing
sink, peers) with four peers side by side in one run — the relay with no webhook (its event log line and
store are always on), with one webhook taking every event, with two (one of them filtered by type), and
Postfix as the reference — and a webhook receiver (``bench.events.receiver``) that records every event
it gets. A run ends when the sink has every accepted message AND the receiver every event those messages
made, so the webhooks' catching up is in the run's CPU. Writes bench/results/events_throughput.md and
the raw figures as events_throughput.json. Needs root (the Postfix peer): see bench/README.md."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import secrets
import shutil
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mta_relay.events import from_config as events_config

from bench.delivery import run
from bench.delivery.__main__ import relay_source
from bench.delivery.receipts import complete_lines, match
from bench.events import receiver
from bench.events.hooks import VARIANTS, Receiver, Variant, start_receiver
from bench.events.store_size import size_of
from bench.events.throughput_report import HookFigures, Row, StoreFigures, render
from bench.frontdoor import machine, postfix_peer, relay_peer
from bench.frontdoor.certs import CertFiles, write_certs
from bench.frontdoor.children import Child, spawn
from bench.frontdoor.loadgen import Load
from bench.frontdoor.peers import Peer, stop_all
from bench.frontdoor.run import WARM_UP
from bench.frontdoor.stats import Outcome

RESULTS = Path(__file__).resolve().parents[1] / "results"

FULL = run.Plan(max_messages=3_000, max_seconds=10, scenarios=((100, 10), (100, 50)), rounds=7,
                budget_seconds=1200)
QUICK = run.Plan(max_messages=250, max_seconds=2, scenarios=((100, 10),), rounds=3, drain_cap_seconds=30,
                 budget_seconds=300)


class EventLog:
    """Tails the receiver's lines: first arrival and copies of each (webhook, seq, type)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.first: dict[tuple[str, int, str], float] = {}
        self.copies: dict[tuple[str, int, str], int] = {}
        self.lines = 0
        self._offset = 0

    def read_new(self) -> None:
        with self.path.open("rb") as log:
            log.seek(self._offset)
            data = complete_lines(log.read())
        self._offset += len(data)
        for hook, seq, kind, _event_id, at in receiver.parse_lines(data.decode()):
            key = (hook, seq, kind)
            self.first.setdefault(key, at)
            self.copies[key] = self.copies.get(key, 0) + 1
            self.lines += 1


@dataclass
class _Relay:
    variant: Variant
    peer: Peer
    spool: Path
    accepted: int = 0  # every message it accepted, warm-up included


@dataclass
class _Harness:
    plan: run.Plan
    bench: run.Bench
    events: EventLog
    receiver: Child
    relays: dict[str, _Relay] = field(default_factory=dict)

    def measure(self, peer: Peer, load: Load, round_: int = 0) -> Row:
        relay = self.relays.get(peer.name)
        hooks: dict[str, HookFigures] = {}
        last_receipt: list[float] = []

        def await_events(outcome: Outcome, receipts: list[tuple[int, float]]) -> None:
            done = match(outcome.accepted_at, receipts)
            last_receipt.append(done.last_receipt or time.monotonic())
            if relay is not None and relay.variant.hooks:
                hooks.update(self._await_events(relay.variant, set(outcome.accepted_at)))

        receiver_cpu = self.receiver.cpu_seconds()
        result = self.bench.measure(peer, load, round_, after_delivery=await_events)
        receiver_cpu = self.receiver.cpu_seconds() - receiver_cpu
        started = last_receipt[0] - result.e2e_seconds
        for figures in hooks.values():
            figures.set_times(started, last_receipt[0])
        if relay is not None:
            relay.accepted += result.accepted
        return Row(result, hooks, round(receiver_cpu, 3) if hooks else 0.0)

    def _await_events(self, variant: Variant, seqs: set[int]) -> dict[str, HookFigures]:
        """Until the receiver has every event of ``seqs`` for every webhook of ``variant``, or none came
        for ``stall_seconds``, or the drain cap."""
        wanted = {(f"{variant.key}/{hook.name}", seq, kind) for hook in variant.hooks
                  for seq in seqs for kind in hook.expected()}
        start = progress = time.monotonic()
        have = 0
        while True:
            self.events.read_new()
            now_have = sum(1 for key in wanted if key in self.events.first)
            if now_have == len(wanted):
                break
            now = time.monotonic()
            if now_have > have:
                have, progress = now_have, now
            if now - progress > self.plan.stall_seconds or now - start > self.plan.drain_cap_seconds:
                break
            time.sleep(0.05)
        figures = {}
        copies = self.events.copies
        for hook in variant.hooks:
            name = f"{variant.key}/{hook.name}"
            keys = [key for key in wanted if key[0] == name]
            arrived = [self.events.first[key] for key in keys if key in self.events.first]
            figures[hook.name] = HookFigures(
                expected=len(keys), received=len(arrived),
                duplicates=sum(copies[key] - 1 for key in keys if key in copies),
                last_arrival=max(arrived, default=float("nan")))
        return figures


def _start(harness: _Harness, workdir: Path, certs: CertFiles, sink_port: int, hooks: Receiver,
           peers: list[Peer]) -> None:
    """Postfix and the relays, each warmed up; appends as it goes (the caller stops what did start)."""
    peers.append(postfix_peer.start(workdir, certs, sink_port, secrets.token_urlsafe(24)))
    for variant in VARIANTS:
        peer = relay_peer.start(workdir, certs, sink_port, relay_peer.generated_password(), name=variant.key,
                                peer_name=variant.peer,
                                events=hooks.events_section(variant, certs))
        peers.append(peer)
        harness.relays[peer.name] = _Relay(variant, peer, workdir / f"{variant.key}-spool")
    for peer in peers:
        warm = harness.measure(peer, WARM_UP)
        lost = sum(h.expected - h.received for h in warm.hooks.values())
        if warm.result.load["errors"] or warm.result.missing or lost:
            raise RuntimeError(f"{peer.name} failed the warm-up: {warm.result.load['error_samples']}, "
                               f"{warm.result.missing} not delivered, {lost} events missing; see {workdir}")


@dataclass
class Done:
    rows: list[Row]
    stores: dict[str, StoreFigures]
    notes: list[str]
    workdir: Path


def execute(plan: run.Plan, *, keep: bool = False, progress: Callable[[str], None] = print) -> Done:
    begun = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="mta-events-"))
    workdir.chmod(0o755)  # Postfix's and Dovecot's unprivileged processes walk through it
    notes: list[str] = []
    rows: list[Row] = []
    stores: dict[str, StoreFigures] = {}
    sink: Child | None = None
    hook_receiver: Child | None = None
    peers: list[Peer] = []
    try:
        receipts = workdir / "receipts.txt"
        receipts.touch()
        sink = spawn("sink", [sys.executable, "-m", "bench.delivery.sink", "--receipts", str(receipts)],
                     workdir, json_stdout=True)
        sink_port = int(sink.read_json_line(timeout=20)["port"])
        certs = write_certs(workdir / "certs")
        hooks = start_receiver(workdir, certs)
        hook_receiver = hooks.child
        if missing := relay_peer.available():
            raise RuntimeError(f"mta-relay cannot run: {missing}")
        tls = ssl.create_default_context(cafile=str(certs.ca))
        bench = run.Bench(plan, workdir, run.ReceiptLog(receipts), tls)
        harness = _Harness(plan, bench, EventLog(hooks.events_file), hook_receiver)
        _start(harness, workdir, certs, sink_port, hooks, peers)
        for turn, (per_connection, clients) in enumerate(plan.scenarios):
            load = Load(clients, per_connection, plan.max_messages, plan.max_seconds)
            for round_ in range(1, plan.rounds + 1):
                shift = (turn + round_ - 1) % len(peers)  # each round starts with the next peer
                for peer in peers[shift:] + peers[:shift]:
                    if time.monotonic() - begun > plan.budget_seconds:
                        notes.append(f"Time budget spent: {peer.name} with {clients} clients, "
                                     f"{per_connection} per connection, round {round_}, not run.")
                        continue
                    rows.append(harness.measure(peer, load, round_))
                    progress(_progress_line(rows[-1]))
        for relay in harness.relays.values():
            relay.peer.stop()
            log = relay.peer.children[0].log
            peers.remove(relay.peer)
            store = relay.spool / events_config.STORE_DIR / events_config.STORE_FILE
            size = size_of(store)
            stores[relay.variant.peer] = StoreFigures(
                messages=relay.accepted, events=size["events"], bytes=size["bytes"],
                log_bytes=log.stat().st_size)
    finally:
        notes.append(f"The sink received {stop_all(peers, sink)} in all (warm-ups included).")
        if hook_receiver is not None:
            counts = hook_receiver.stop().decode().strip().splitlines()
            notes.append(f"The webhook receiver: {counts[-1] if counts else 'no count'} in all (warm-ups "
                         "included; `unverified`: requests whose signature did not verify).")
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return Done(rows, stores, notes, workdir)


def _progress_line(row: Row) -> str:
    r = row.result
    hooks = "  ".join(f"{name}: {h.received}/{h.expected} events, lag {h.lag_ms:.0f} ms"
                      for name, h in row.hooks.items())
    return (f"{r.peer:>18}  {r.per_connection:>3}/conn {r.clients:>2} clients  round {r.round}  "
            f"accepted {r.accepted:>5}  delivered {r.delivered} in {r.e2e_seconds} s = {r.e2e_rate:.1f}/s  "
            f"CPU {r.per_message(r.cpu_seconds, 1000)} ms/msg  errors {r.load['errors']}  {hooks}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"short runs ({QUICK.bounds()})")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs, stores)")
    parser.add_argument("--out", type=Path, default=RESULTS / "events_throughput.md")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run as root: the Postfix peer is a private instance that starts as root")
    plan = QUICK if args.quick else FULL
    about = machine.describe(Path(tempfile.gettempdir()))
    about["mta-relay source"] = relay_source()
    done = execute(plan, keep=args.keep)
    about["load average at end"] = machine.load_average()
    notes = done.notes + ([f"Kept: {done.workdir}"] if args.keep else [])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(done.rows, done.stores, about, _bounds(plan), notes,
                               {v.peer: [dataclasses.asdict(h) for h in v.hooks] for v in VARIANTS}))
    raw: dict[str, Any] = {
        "machine": about, "plan": dataclasses.asdict(plan), "notes": notes,
        "variants": [dataclasses.asdict(v) for v in VARIANTS],
        "stores": {name: dataclasses.asdict(s) for name, s in done.stores.items()},
        "runs": [dataclasses.asdict(row.result) | {
            "e2e_msgs_per_s": round(row.result.e2e_rate, 1), "receiver_cpu_seconds": row.receiver_cpu_seconds,
            "hooks": {n: dataclasses.asdict(h) for n, h in row.hooks.items()}} for row in done.rows]}
    args.out.with_suffix(".json").write_text(json.dumps(raw, indent=1) + "\n")
    print(f"wrote {args.out}")


def _bounds(plan: run.Plan) -> str:
    return (f"{plan.rounds} rounds per peer and scenario, the peers in turn (the first peer moves on by one "
            f"every round), each run {plan.max_messages} messages or {plan.max_seconds:g} s of injection, "
            f"whichever comes first, then up to {plan.drain_cap_seconds:g} s for delivery and again for the "
            f"webhooks to finish; no run starts after {plan.budget_seconds:g} s")


if __name__ == "__main__":
    main()
