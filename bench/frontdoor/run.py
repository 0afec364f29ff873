"""One benchmark run: start the sink, then for each CPU limit start every peer inside that limit (its own
control group: bench.frontdoor.cpulimit), warm each up, and run each scenario in rounds, every peer once
per round in an order that rotates from round to round (bench.frontdoor.rounds), collecting throughput,
latency and CPU. Then every peer is started again, without a limit and under strace, and each scenario
runs once more, shorter, to count sync syscalls: a tracer stops the process at every sync, so it is kept
out of the timed runs (bench.frontdoor.children)."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.frontdoor import machine, postfix_peer, relay_peer
from bench.frontdoor.certs import CertFiles, write_certs
from bench.frontdoor.children import Child, spawn
from bench.frontdoor.cpulimit import CpuGroup, CpuLimits
from bench.frontdoor.loadgen import Load, run_load
from bench.frontdoor.peers import CEILING, Peer, start_ceiling, stop_all
from bench.frontdoor.report import Result
from bench.frontdoor.rounds import Schedule, cpus_label, rotation
from bench.frontdoor.smtp_client import Target

MAIL_FROM, RCPT_TO = "bench@example.com", "sink@example.net"
WARM_UP = Load(clients=2, per_connection=1, max_messages=20, max_seconds=20)
# (messages per connection, clients): new connections (a TLS handshake and AUTH per message) at two
# concurrencies, long-lived submission connections at three.
SCENARIOS = ((1, 10), (1, 50), (100, 1), (100, 10), (100, 50))


@dataclass(frozen=True)
class Plan:
    max_messages: int
    max_seconds: float
    scenarios: tuple[tuple[int, int], ...] = SCENARIOS
    rounds: int = 5
    cpus: tuple[int | None, ...] = (1, 2)  # cores per peer; None: no limit
    traced_messages: int = 1_000  # per scenario and peer in the traced pass (sync counts)
    budget_seconds: float = 1_320  # no timed run starts after this, so a run stays near 25 minutes

    def bounds(self) -> str:
        limits = ", ".join(cpus_label(c) for c in self.cpus)
        return (f"{self.rounds} rounds per scenario and CPU limit ({limits}), every peer once per round, "
                f"each run {self.max_messages} messages or {self.max_seconds:g} s, whichever comes first; no "
                f"timed run starts after {self.budget_seconds:g} s; then the traced pass, no limit, "
                f"{min(self.max_messages, self.traced_messages)} messages per peer and scenario")


FULL = Plan(max_messages=20_000, max_seconds=6)
QUICK = Plan(max_messages=1_000, max_seconds=1, rounds=3, traced_messages=300, budget_seconds=300)


@dataclass
class Run:
    results: list[Result]
    notes: list[str]
    workdir: Path
    processes: dict[str, dict[str, int]] = field(default_factory=dict)  # CPU limit → peer → processes


def _target(peer: Peer) -> Target:
    return Target("127.0.0.1", peer.port, peer.username, peer.password, MAIL_FROM, RCPT_TO)


def _start_peers(workdir: Path, certs: CertFiles, sink_port: int, peers: list[Peer], *, with_relay: bool,
                 traced: bool, cpus: int | None, limits: CpuLimits | None, workers: int | None) -> None:
    """Appends as it goes, so that the caller stops what did start when a later peer fails."""
    # Each start needs its own queue and config directories, and each peer its own group.
    prefix = "traced-" if traced else f"cpus{cpus or 'max'}-"

    def group(name: str) -> CpuGroup | None:
        return limits.group(name, cpus) if limits is not None else None

    peers.append(start_ceiling(workdir, certs, traced=traced, name=f"{prefix}ceiling",
                               cpu_group=group(f"{prefix}ceiling")))
    peers.append(postfix_peer.start(workdir, certs, sink_port, secrets.token_urlsafe(24), traced=traced,
                                    name=f"{prefix}postfix", cpu_group=group(f"{prefix}postfix")))
    if with_relay and relay_peer.available() is None:
        peers.append(relay_peer.start(workdir, certs, sink_port, relay_peer.generated_password(),
                                      traced=traced, name=f"{prefix}relay", workers=workers,
                                      cpu_group=group(f"{prefix}relay")))


def _workers(asked: int | None, notes: list[str]) -> int | None:
    """What to pass as ``--workers``: only what was asked for, and only to a relay that has the option."""
    takes = relay_peer.available() is None and relay_peer.takes_workers()
    if asked is None:
        notes.append("`--workers` not passed: mta-relay sized its serving processes itself (one per core of "
                     "its CPU limit; see Processes per peer)." if takes else
                     "This mta-relay has no `--workers` option (`mta-relay --help`): it ran as it does by "
                     "default, nothing passed.")
        return None
    if not takes:
        notes.append(f"`--relay-workers {asked}` asked for, but this mta-relay has no `--workers` option "
                     "(`mta-relay --help`): not passed, the relay ran as it does by default.")
        return None
    notes.append(f"mta-relay ran with `--workers {asked}`.")
    return asked


def execute(plan: Plan, *, with_relay: bool = True, keep: bool = False, relay_workers: int | None = None,
            progress: Callable[[str], None] = print) -> Run:
    workdir = Path(tempfile.mkdtemp(prefix="mta-frontdoor-"))
    workdir.chmod(0o755)  # Postfix's and Dovecot's unprivileged processes walk through it to their files
    notes: list[str] = []
    results: list[Result] = []
    processes: dict[str, dict[str, int]] = {}
    sink: Child | None = None
    peers: list[Peer] = []
    limits = CpuLimits.detect() if any(c is not None for c in plan.cpus) else None
    if limits is not None:
        notes.append(f"CPU limits: {limits.note}.")
    if with_relay and (missing := relay_peer.available()) is not None:
        notes.append(f"mta-relay not run: {missing}.")
    elif not with_relay:
        notes.append("mta-relay not run: left out (--no-relay).")
    workers = _workers(relay_workers, notes) if with_relay else None
    try:
        sink = spawn("sink", [sys.executable, "-m", "bench.frontdoor.sink"], workdir, json_stdout=True)
        sink_port = int(sink.read_json_line(timeout=20)["port"])
        certs = write_certs(workdir / "certs")
        tls = ssl.create_default_context(cafile=str(certs.ca))
        schedule = Schedule[Peer](plan.rounds, plan.budget_seconds, time.monotonic)
        for cpus in plan.cpus:
            _start_peers(workdir, certs, sink_port, peers, with_relay=with_relay, traced=False, cpus=cpus,
                         limits=limits, workers=workers)
            _warm_up(peers, tls, workdir)
            processes[cpus_label(cpus)] = {peer.name: peer.processes() for peer in peers}
            for per_connection, clients, round_, peer in schedule.runs(plan.scenarios, peers,
                                                                       lambda p: p.name, cpus_label(cpus)):
                load = Load(clients, per_connection, plan.max_messages, plan.max_seconds)
                results.append(_measure(peer, tls, load, round_, cpus))
                progress(_progress_line(results[-1]))
            while peers:
                peers.pop().stop()
        _start_peers(workdir, certs, sink_port, peers, with_relay=with_relay, traced=True, cpus=None,
                     limits=None, workers=workers)
        _warm_up(peers, tls, workdir)
        for per_connection, clients in plan.scenarios:
            messages = min(plan.max_messages, plan.traced_messages)
            load = Load(clients, per_connection, messages, plan.max_seconds)
            for peer in rotation(peers, schedule.turn):
                results.append(_measure(peer, tls, load, 1, None))
                progress(_progress_line(results[-1]))
            schedule.turn += 1
        while peers:
            peers.pop().stop()
        if (note := schedule.note()) is not None:
            notes.append(note)
        starts = len(plan.cpus) + 1
        for name in dict.fromkeys(r.peer for r in results if r.peer != CEILING):  # those relaying to the sink
            accepted = sum(int(r.summary["messages"]) for r in results if r.peer == name)
            notes.append(f"{name} accepted {accepted + starts * WARM_UP.max_messages} messages in all "
                         "(warm-ups and the traced pass included).")
    finally:
        received = stop_all(peers, sink)
        if limits is not None:
            notes += limits.close()
        notes.append(f"The null sink received {received}: what Postfix and mta-relay delivered by the end of "
                     "the run.")
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return Run(results, notes, workdir, processes)


def _warm_up(peers: list[Peer], tls: ssl.SSLContext, workdir: Path) -> None:
    for peer in peers:
        warm = asyncio.run(run_load(_target(peer), tls, WARM_UP))
        if warm.errors or warm.messages != WARM_UP.max_messages:
            raise RuntimeError(f"{peer.name} failed the warm-up: {warm.error_samples}; see {workdir}")
        peer.settle()


def _measure(peer: Peer, tls: ssl.SSLContext, load: Load, round_: int, cpus: int | None) -> Result:
    load_average = machine.load_average_1m()
    sync_before, cpu_before = peer.sync_calls(), peer.cpu_seconds()
    outcome = asyncio.run(run_load(_target(peer), tls, load))
    peer.settle()  # what it queued is delivered (and fsynced, and paid for) before the next peer runs
    sync_after = peer.sync_calls()
    syncs = sync_after - sync_before if sync_after is not None and sync_before is not None else None
    return Result(peer.name, load.per_connection, load.clients, outcome.summary(), syncs,
                  peer.cpu_seconds() - cpu_before, round=round_, cpus=cpus, load_average=load_average)


def _progress_line(r: Result) -> str:
    s = r.summary
    kind = f"traced: fsyncs/msg {r.per_message(r.sync_calls)}" if r.sync_calls is not None else "timed"
    return (f"{r.peer:>16}  {cpus_label(r.cpus):>8}  {r.per_connection:>3}/conn  {r.clients:>2} clients  "
            f"round {r.round}  {kind}  {s['msgs_per_s']:>8} msgs/s  "
            f"CPU {r.per_message(r.cpu_seconds, 1000)} ms/msg  p50 {s['p50_ms']} ms  p99 {s['p99_ms']} ms  "
            f"errors {s['errors']} {s['error_samples'][:1]}")
