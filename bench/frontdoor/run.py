"""One benchmark run: start the sink and every peer, warm each up, then for each mode and concurrency run
the same load against each peer in turn (the order rotates, so background noise on the shared machine
does not always hit the same peer), and collect throughput, latency and CPU. Then every peer is started
again under strace and each scenario runs once more, shorter, to count sync syscalls: a tracer stops the
process at every sync, so it is kept out of the timed runs (bench.frontdoor.children)."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import ssl
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.frontdoor import postfix_peer, relay_peer
from bench.frontdoor.certs import write_certs
from bench.frontdoor.children import Child, spawn
from bench.frontdoor.loadgen import Load, run_load
from bench.frontdoor.peers import CEILING, Peer, start_ceiling, stop_all
from bench.frontdoor.report import Result
from bench.frontdoor.smtp_client import Target

MAIL_FROM, RCPT_TO = "bench@example.com", "sink@example.net"
WARM_UP = Load(clients=2, per_connection=1, max_messages=20, max_seconds=20)


@dataclass(frozen=True)
class Plan:
    max_messages: int
    max_seconds: float
    per_connection: tuple[int, ...] = (1, 100)
    clients: tuple[int, ...] = (1, 10, 50)
    traced_messages: int = 1_000  # per scenario and peer in the traced pass (sync counts)

    def bounds(self) -> str:
        return (f"{self.max_messages} messages or {self.max_seconds:g} s, whichever comes first (traced "
                f"pass: {min(self.max_messages, self.traced_messages)} messages)")


FULL = Plan(max_messages=30_000, max_seconds=15)
QUICK = Plan(max_messages=2_000, max_seconds=3, traced_messages=300)


@dataclass
class Run:
    results: list[Result]
    notes: list[str]
    workdir: Path


def _target(peer: Peer) -> Target:
    return Target("127.0.0.1", peer.port, peer.username, peer.password, MAIL_FROM, RCPT_TO)


def _start_peers(workdir: Path, sink_port: int, with_relay: bool, peers: list[Peer], notes: list[str], *,
                 traced: bool) -> None:
    """Appends as it goes, so that the caller stops what did start when a later peer fails."""
    certs = write_certs(workdir / "certs")
    prefix = "traced-" if traced else ""  # a second instance needs its own queue and config directories
    peers.append(start_ceiling(workdir, certs, traced=traced))
    peers.append(postfix_peer.start(workdir, certs, sink_port, secrets.token_urlsafe(24), traced=traced,
                                    name=f"{prefix}postfix"))
    missing = relay_peer.available()
    if with_relay and missing is None:
        peers.append(relay_peer.start(workdir, certs, sink_port, relay_peer.generated_password(),
                                      traced=traced, name=f"{prefix}relay"))
    elif not traced:
        notes.append(f"mta-relay not run: {missing or 'left out (--no-relay)'}.")


def execute(plan: Plan, *, with_relay: bool = True, keep: bool = False,
            progress: Callable[[str], None] = print) -> Run:
    workdir = Path(tempfile.mkdtemp(prefix="mta-frontdoor-"))
    workdir.chmod(0o755)  # Postfix's and Dovecot's unprivileged processes walk through it to their files
    notes: list[str] = []
    results: list[Result] = []
    sink: Child | None = None
    peers: list[Peer] = []
    try:
        sink = spawn("sink", [sys.executable, "-m", "bench.frontdoor.sink"], workdir, json_stdout=True)
        sink_port = int(sink.read_json_line(timeout=20)["port"])
        for traced in (False, True):
            _start_peers(workdir, sink_port, with_relay, peers, notes, traced=traced)
            tls = ssl.create_default_context(cafile=str(workdir / "certs/ca.pem"))
            for peer in peers:
                warm = asyncio.run(run_load(_target(peer), tls, WARM_UP))
                if warm.errors or warm.messages != WARM_UP.max_messages:
                    raise RuntimeError(f"{peer.name} failed the warm-up: {warm.error_samples}; see {workdir}")
                peer.settle()
            messages = min(plan.max_messages, plan.traced_messages) if traced else plan.max_messages
            turn = 0
            for per_connection in plan.per_connection:
                for clients in plan.clients:
                    load = Load(clients, per_connection, messages, plan.max_seconds)
                    for peer in peers[turn:] + peers[:turn]:
                        results.append(_measure(peer, _target(peer), tls, load))
                        progress(_progress_line(results[-1]))
                    turn = (turn + 1) % len(peers)
            while peers:
                peers.pop().stop()
        for name in dict.fromkeys(r.peer for r in results if r.peer != CEILING):  # those relaying to the sink
            accepted = sum(int(r.summary["messages"]) for r in results if r.peer == name)
            notes.append(f"{name} accepted {accepted + 2 * WARM_UP.max_messages} messages in all "
                         "(warm-ups and the traced pass included).")
    finally:
        notes.append(f"The null sink received {stop_all(peers, sink)}: what Postfix and mta-relay delivered "
                     "by the end of the run.")
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return Run(results, notes, workdir)


def _measure(peer: Peer, target: Target, tls: ssl.SSLContext, load: Load) -> Result:
    sync_before, cpu_before = peer.sync_calls(), peer.cpu_seconds()
    outcome = asyncio.run(run_load(target, tls, load))
    peer.settle()  # what it queued is delivered (and fsynced, and paid for) before the next peer runs
    sync_after = peer.sync_calls()
    syncs = sync_after - sync_before if sync_after is not None and sync_before is not None else None
    return Result(peer.name, load.per_connection, load.clients, outcome.summary(), syncs,
                  peer.cpu_seconds() - cpu_before)


def _progress_line(r: Result) -> str:
    s = r.summary
    kind = f"traced: fsyncs/msg {r.per_message(r.sync_calls)}" if r.sync_calls is not None else "timed"
    return (f"{r.peer:>16}  {r.per_connection:>3}/conn  {r.clients:>2} clients  {kind}  "
            f"{s['msgs_per_s']:>8} msgs/s  "
            f"p50 {s['p50_ms']} ms  p99 {s['p99_ms']} ms  errors {s['errors']} {s['error_samples'][:1]}")
