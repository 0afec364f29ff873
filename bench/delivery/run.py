"""One delivery benchmark run: start the timing sink, then for each CPU limit start the Postfix peer and
the relay inside that limit (each its own control group: bench.frontdoor.cpulimit), both delivering to
the sink, warm each up, and run each scenario in rounds, both peers once per round in an order that
rotates from round to round (bench.frontdoor.rounds), so that drifting background load on the shared
machine does not favour one peer. A run injects, waits until the sink has every accepted message (or
delivery stalls), lets the peer's queue settle, and collects the figures. Bounded: per run by a count
and a time, per drain by a stall time and a cap, and the whole by a time budget.

The timed rounds run the peers untraced. Then both peers are started again, without a limit and under
strace, and each scenario runs once more, shorter, to count the sync calls and see where they go: a
tracer stops the process at every sync, so it must not be in the timed figures
(bench.frontdoor.children)."""

from __future__ import annotations

import asyncio
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

from bench.delivery.receipts import complete_lines, match, parse_sink_lines
from bench.delivery.report import Result
from bench.delivery.sched import thread_waits, waited_seconds
from bench.delivery.syncs import SyncUse, sync_use
from bench.frontdoor import machine, postfix_peer, relay_peer
from bench.frontdoor.certs import CertFiles, write_certs
from bench.frontdoor.children import Child, spawn
from bench.frontdoor.cpulimit import CpuLimits
from bench.frontdoor.loadgen import Load, run_load
from bench.frontdoor.peers import Peer, stop_all
from bench.frontdoor.rounds import Schedule, cpus_label, rotation
from bench.frontdoor.run import MAIL_FROM, RCPT_TO, WARM_UP
from bench.frontdoor.smtp_client import Target
from bench.frontdoor.stats import Outcome

SEQ_STRIDE = 10**12  # Message-ID seqs of run n start at n * SEQ_STRIDE (loadgen: client * 10**7 + count)


@dataclass(frozen=True)
class Plan:
    max_messages: int
    max_seconds: float
    # (messages per connection, clients): long-lived submission connections at three concurrencies, and
    # one message per connection at two.
    scenarios: tuple[tuple[int, int], ...] = ((100, 1), (100, 10), (100, 50), (1, 10), (1, 50))
    rounds: int = 5
    cpus: tuple[int | None, ...] = (None,)  # cores per peer, one pass each; None: no limit
    stall_seconds: float = 15  # no accepted message reached the sink for this long: delivery is stuck
    drain_cap_seconds: float = 45
    budget_seconds: float = 540  # no timed run starts after this
    traced_messages: int = 1_000  # per scenario and peer in the traced pass

    def bounds(self) -> str:
        limits = ", ".join(cpus_label(c) for c in self.cpus)
        return (f"{self.rounds} rounds per scenario and CPU limit ({limits}), both peers once per round, "
                f"each run {self.max_messages} messages or {self.max_seconds:g} s of injection, whichever "
                f"comes first, then up to {self.drain_cap_seconds:g} s for delivery to finish; no run starts "
                f"after {self.budget_seconds:g} s; then one traced run per peer and scenario, no limit (at "
                f"most {self.traced_messages} messages), to count sync calls")


FULL = Plan(max_messages=3_000, max_seconds=8, cpus=(1, 2), stall_seconds=10, drain_cap_seconds=30,
            budget_seconds=1_260)
QUICK = Plan(max_messages=250, max_seconds=1, rounds=3, cpus=(1, 2), stall_seconds=10, drain_cap_seconds=20,
             budget_seconds=300, traced_messages=250)


@dataclass
class Run:
    results: list[Result]
    notes: list[str]
    workdir: Path
    processes: dict[str, dict[str, int]] = field(default_factory=dict)  # CPU limit → peer → processes


class ReceiptLog:
    """Reads the sink's lines as they are written: receipts, and a running count of connections."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.connections = 0
        self._offset = 0

    def read_new(self) -> list[tuple[int, float]]:
        with self.path.open("rb") as log:
            log.seek(self._offset)
            data = complete_lines(log.read())
        self._offset += len(data)
        receipts, connections = parse_sink_lines(data.decode())
        self.connections += connections
        return receipts


def _target(peer: Peer) -> Target:
    return Target("127.0.0.1", peer.port, peer.username, peer.password, MAIL_FROM, RCPT_TO)


def execute(plan: Plan, *, keep: bool = False, progress: Callable[[str], None] = print) -> Run:
    workdir = Path(tempfile.mkdtemp(prefix="mta-delivery-"))
    workdir.chmod(0o755)  # Postfix's and Dovecot's unprivileged processes walk through it to their files
    notes: list[str] = []
    results: list[Result] = []
    processes: dict[str, dict[str, int]] = {}
    sink: Child | None = None
    peers: list[Peer] = []
    limits = CpuLimits.detect() if any(c is not None for c in plan.cpus) else None
    if limits is not None:
        notes.append(f"CPU limits: {limits.note}.")
    try:
        receipts = workdir / "receipts.txt"
        receipts.touch()
        sink = spawn("sink", [sys.executable, "-m", "bench.delivery.sink", "--receipts", str(receipts)],
                     workdir, json_stdout=True)
        sink_port = int(sink.read_json_line(timeout=20)["port"])
        certs = write_certs(workdir / "certs")
        if missing := relay_peer.available():
            raise RuntimeError(f"mta-relay cannot run: {missing}")
        bench = Bench(plan, workdir, ReceiptLog(receipts),
                      ssl.create_default_context(cafile=str(certs.ca)))
        schedule = Schedule[Peer](plan.rounds, plan.budget_seconds, time.monotonic)
        for cpus in plan.cpus:
            _start_peers(bench, certs, sink_port, peers, traced=False, cpus=cpus, limits=limits)
            processes[cpus_label(cpus)] = {peer.name: peer.processes() for peer in peers}
            for per_connection, clients, round_, peer in schedule.runs(plan.scenarios, peers,
                                                                       lambda p: p.name, cpus_label(cpus)):
                load = Load(clients, per_connection, plan.max_messages, plan.max_seconds)
                results.append(bench.measure(peer, load, round_))
                progress(_progress_line(results[-1]))
            while peers:
                peers.pop().stop()
        _start_peers(bench, certs, sink_port, peers, traced=True, cpus=None, limits=None)
        for per_connection, clients in plan.scenarios:
            load = Load(clients, per_connection, min(plan.max_messages, plan.traced_messages),
                        plan.max_seconds)
            for peer in rotation(peers, schedule.turn):
                results.append(bench.measure(peer, load, 1))
                progress(_progress_line(results[-1]))
            schedule.turn += 1
        if (note := schedule.note()) is not None:
            notes.append(note)
    finally:
        received = stop_all(peers, sink)
        if limits is not None:
            notes += limits.close()
        notes.append(f"The sink received {received} in all (warm-ups and the traced runs included).")
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return Run(results, notes, workdir, processes)


def _start_peers(bench: Bench, certs: CertFiles, sink_port: int, peers: list[Peer], *, traced: bool,
                 cpus: int | None, limits: CpuLimits | None) -> None:
    """Appends as it goes (the caller stops what did start); each peer is warmed up."""
    # Each start needs its own queue and config directories, and each peer its own group.
    prefix = "traced-" if traced else ("" if cpus is None else f"cpus{cpus}-")
    postfix, relay = (limits.group(f"{prefix}{name}", cpus) if limits else None
                      for name in ("postfix", "relay"))
    peers.append(postfix_peer.start(bench.workdir, certs, sink_port, secrets.token_urlsafe(24), traced=traced,
                                    name=f"{prefix}postfix", cpu_group=postfix))
    peers.append(relay_peer.start(bench.workdir, certs, sink_port, relay_peer.generated_password(),
                                  traced=traced, name=f"{prefix}relay", cpu_group=relay))
    for peer in peers:
        warm = bench.measure(peer, WARM_UP)
        if warm.load["errors"] or warm.missing or warm.accepted != WARM_UP.max_messages:
            raise RuntimeError(f"{peer.name} failed the warm-up: {warm.load['error_samples']}, "
                               f"{warm.missing} not delivered; see {bench.workdir}")


class Bench:
    def __init__(self, plan: Plan, workdir: Path, receipts: ReceiptLog, tls: ssl.SSLContext) -> None:
        self.plan, self.workdir, self.receipts, self.tls = plan, workdir, receipts, tls
        self._runs = 0

    def measure(self, peer: Peer, load: Load, round_: int = 0, *,
                after_delivery: Callable[[Outcome, list[tuple[int, float]]], None] | None = None) -> Result:
        """One run; ``round_`` 0 is the warm-up. ``after_delivery(outcome, receipts)`` runs once the sink
        has every accepted message (or delivery stalled) and before the peer settles: more of the peer's
        work to wait for (the events benchmark waits for its webhooks there), inside the CPU figure."""
        self._runs += 1
        load = Load(load.clients, load.per_connection, load.max_messages, load.max_seconds,
                    load.message_size, first_seq=self._runs * SEQ_STRIDE)
        self.receipts.read_new()  # whatever came before this run is not this run's
        connections_before = self.receipts.connections
        traced = peer.sync_calls() is not None  # untraced peers (the timed rounds) count no syncs
        load_average = machine.load_average_1m()
        logs = {child.name: child.trace.log.stat().st_size for child in peer.children if child.trace}
        sync_before, cpu_before, waits_before = peer.sync_calls(), peer.cpu_seconds(), _waits(peer)
        started = time.monotonic()
        outcome = asyncio.run(run_load(_target(peer), self.tls, load))
        ended = time.monotonic()
        received = self._await_delivery(set(outcome.accepted_at))
        if after_delivery is not None:
            after_delivery(outcome, received)
        peer.settle()  # its queue is empty: removal is part of the pipeline's cost
        if traced:
            _await_quiet(peer)
        received += self.receipts.read_new()  # late duplicates
        matched = match(outcome.accepted_at, received)
        last = matched.last_receipt if matched.last_receipt is not None else ended
        syncs = SyncUse()
        for child in peer.children:
            if child.trace is None:
                continue
            with child.trace.log.open("rb") as log:
                log.seek(logs[child.name])
                text = log.read().decode(errors="replace")
            use = sync_use(text, str(self.workdir), os.path.isdir)
            syncs.calls += use.calls
            syncs.seconds += use.seconds
        return Result(peer.name, load.per_connection, load.clients, round_, outcome.summary(),
                      matched.delivered, matched.missing, matched.duplicates, matched.unexpected,
                      e2e_seconds=round(last - started, 3), drain_seconds=round(max(0.0, last - ended), 3),
                      latency=matched.latency_ms(),
                      sync_calls=_difference(sync_before, peer.sync_calls()),
                      sync_targets=dict(syncs.calls.most_common()),
                      sync_seconds={target: round(s, 4) for target, s in syncs.seconds.most_common()},
                      connections=self.receipts.connections - connections_before,
                      cpu_seconds=round(peer.cpu_seconds() - cpu_before, 3),
                      cpu_wait_seconds=round(waited_seconds(waits_before, _waits(peer)), 3), traced=traced,
                      cpus=peer.cpu_group.cores if peer.cpu_group else None, load_average=load_average)

    def _await_delivery(self, wanted: set[int]) -> list[tuple[int, float]]:
        """Receipts until every wanted seq is in, or no wanted one came for ``stall_seconds``, or the cap."""
        received: list[tuple[int, float]] = []
        seen: set[int] = set()
        start = progress = time.monotonic()
        while len(seen) < len(wanted):
            now = time.monotonic()
            if now - progress > self.plan.stall_seconds or now - start > self.plan.drain_cap_seconds:
                break
            time.sleep(0.05)
            new = self.receipts.read_new()
            received += new
            fresh = {seq for seq, _ in new if seq in wanted} - seen
            if fresh:
                seen |= fresh
                progress = time.monotonic()
        return received


def _difference(before: int | None, after: int | None) -> int | None:
    return after - before if before is not None and after is not None else None


def _waits(peer: Peer) -> dict[tuple[int, int], int]:
    return {key: ns for child in peer.children for key, ns in thread_waits(child.peer_pid()).items()}


def _await_quiet(peer: Peer, quiet: float = 1.0, cap: float = 10.0) -> None:
    """Until the peer made no sync call for ``quiet`` seconds: the last removals are paid for in this run."""
    start = since = time.monotonic()
    count = peer.sync_calls()
    while time.monotonic() - since < quiet and time.monotonic() - start < cap:
        time.sleep(0.1)
        if (now := peer.sync_calls()) != count:
            count, since = now, time.monotonic()


def _progress_line(r: Result) -> str:
    lat = r.latency
    syncs = f"traced: syncs/msg {r.per_message(r.sync_calls or 0)}" if r.traced else "timed"
    return (f"{r.peer:>10}  {cpus_label(r.cpus):>8}  {r.per_connection:>3}/conn  {r.clients:>2} clients  "
            f"round {r.round}  CPU {r.per_message(r.cpu_seconds, 1000)} ms/msg  "
            f"accepted {r.accepted:>5} ({r.load['msgs_per_s']}/s)  delivered {r.delivered} "
            f"in {r.e2e_seconds} s = {r.e2e_rate:.1f}/s  "
            f"p50 {lat['p50_ms']} p99 {lat['p99_ms']} ms  {syncs}  errors {r.load['errors']}")
