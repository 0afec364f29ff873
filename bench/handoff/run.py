"""One hand-off benchmark run. For each queue size N and each repeat, the two peers run one after the
other (relay, Postfix, relay, Postfix …), each on a fresh pair of MTAs in its own directory:

1. start the pair (``relays.start_pair`` or ``postfix_pair.start``), both relaying to a closed port;
2. fill the sender with N messages over SMTP (the front-door bench's load generator: 1 KiB, one
   recipient, STARTTLS + AUTH PLAIN) and wait until every one was tried and deferred;
3. start the clock and move the queue: the relay by settings (A leaving, SIGHUP) and its HTTPS hand-off,
   Postfix by ``postconf -e relayhost``, reload and ``postqueue -f``;
4. poll the sender until its queue is empty (the relay: ``GET /internal/v1/queue`` depth, what the
   operator polls; Postfix: its queue directories), then check that the receiver holds all N.

Bounded everywhere: the fill by the load generator's time bound, every wait by a stall time (no
progress) and a cap. The figures are wall time and CPU of both MTAs' processes during the move."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.frontdoor import relay_peer
from bench.frontdoor.certs import CertFiles, write_certs
from bench.frontdoor.children import Child, free_port
from bench.frontdoor.loadgen import Load, run_load
from bench.frontdoor.peers import POSTFIX, RELAY
from bench.frontdoor.run import MAIL_FROM, RCPT_TO
from bench.frontdoor.smtp_client import Target
from bench.handoff import postfix_pair, relays
from bench.handoff.report import Result

POLL_SECONDS = 0.02  # how often the sender's queue is looked at while it empties
RSS_EVERY = 10  # polls between two samples of Postfix's memory (a walk over /proc costs shared CPU)


@dataclass(frozen=True)
class Plan:
    sizes: tuple[int, ...]
    repeats: int
    fill_clients: int = 20  # SMTP sessions filling the sender at once, 100 messages each
    stall_seconds: float = 60  # no progress for this long: the move is stuck, the run says so
    cap_seconds: float = 600  # the longest any single wait may take

    def bounds(self) -> str:
        return (f"queue sizes {', '.join(str(n) for n in self.sizes)}; {self.repeats} repeat(s) per size "
                f"and peer; each wait ends after {self.stall_seconds:g} s without progress or "
                f"{self.cap_seconds:g} s")


FULL = Plan(sizes=(100, 1000, 10_000), repeats=3)
QUICK = Plan(sizes=(100, 500), repeats=1)


@dataclass
class Run:
    results: list[Result]
    notes: list[str] = field(default_factory=list)
    workdir: Path = Path()


def execute(plan: Plan, *, keep: bool = False, progress: Callable[[str], None] = print) -> Run:
    workdir = Path(tempfile.mkdtemp(prefix="mta-handoff-"))
    workdir.chmod(0o755)  # Postfix's unprivileged processes walk through it to their queues
    done = Run([], [], workdir)
    try:
        certs = write_certs(workdir / "certs")  # one certificate: the cluster's, shared by both relays
        for size in plan.sizes:
            for repeat in range(1, plan.repeats + 1):
                for peer in (RELAY, POSTFIX):
                    rundir = workdir / f"{'relay' if peer == RELAY else 'postfix'}-{size}-{repeat}"
                    rundir.mkdir()
                    rundir.chmod(0o755)
                    measure = _relay_run if peer == RELAY else _postfix_run
                    result = measure(plan, rundir, certs, size, repeat)
                    done.results.append(result)
                    progress(_progress_line(result))
                    if not keep:  # 10,000 queue files per side: do not let them pile up
                        shutil.rmtree(rundir, ignore_errors=True)
    except BaseException:
        keep = True  # the logs of the run that failed are what one needs to see why
        progress(f"failed; kept {workdir}")
        raise
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return done


def _fill(port: int, username: str, password: str, certs: CertFiles, size: int, plan: Plan) -> float:
    """N messages over SMTP; seconds it took. Every one must get its 250."""
    target = Target("127.0.0.1", port, username, password, MAIL_FROM, RCPT_TO)
    tls = ssl.create_default_context(cafile=str(certs.ca))
    load = Load(clients=min(plan.fill_clients, max(1, size // 100)), per_connection=100, max_messages=size,
                max_seconds=plan.cap_seconds)
    outcome = asyncio.run(run_load(target, tls, load))
    if outcome.errors or outcome.messages != size:
        raise RuntimeError(f"fill: {outcome.messages} of {size} accepted, errors {outcome.error_samples}")
    return outcome.elapsed


def _wait(what: str, value: Callable[[], int], done: Callable[[int], bool], plan: Plan,
          on_poll: Callable[[], None] = lambda: None, stall: float | None = None) -> float:
    """Poll ``value`` until ``done`` holds; monotonic time when it did. RuntimeError when it stops
    changing for ``stall`` (default: the plan's ``stall_seconds``) or takes ``cap_seconds``."""
    stall = plan.stall_seconds if stall is None else stall
    start = since = time.monotonic()
    last = value()
    while not done(last):
        now = time.monotonic()
        if now - since > stall or now - start > plan.cap_seconds:
            raise RuntimeError(f"{what}: stuck at {last}")
        time.sleep(POLL_SECONDS)
        on_poll()
        current = value()
        if current != last:
            last, since = current, time.monotonic()
    return time.monotonic()


def _wait_value(value: Callable[[], int], wanted: int, plan: Plan) -> int:
    """``value()`` once it reached ``wanted``, or what it is when it stops changing (then the report
    shows the shortfall)."""
    with contextlib.suppress(RuntimeError):
        _wait("a count", value, lambda n: n >= wanted, plan, stall=5)
    return value()


def _relay_run(plan: Plan, rundir: Path, certs: CertFiles, size: int, repeat: int) -> Result:
    a, b = relays.start_pair(rundir, certs, free_port(), "relay")
    try:
        for relay in (a, b):  # both serve the peer API (the token file was read)
            _wait(f"{relay.name} serving", lambda r=relay: int(_serving(r)), bool, plan)
        fill = _fill(a.smtp_port, relay_peer.USERNAME, a.password, certs, size, plan)
        _wait("A deferring every message", a.deferred, lambda n: n >= size, plan)
        cpu_before = [r.child.cpu_seconds() for r in (a, b)]
        for relay in (a, b):
            relay.reset_peak_rss()
        wall, start = time.time(), time.monotonic()
        peers = [(relays.STAYING_POD, b.http_port)]
        a.set_leaving([relays.LEAVING_POD], peers)  # the operator's ConfigMap is one for all MTAs
        b.set_leaving([relays.LEAVING_POD], peers)
        seen: dict[str, float] = {}

        def depth() -> int:
            status = a.queue()
            if status["leaving"] and "leaving" not in seen:
                seen["leaving"] = time.monotonic()
            return int(status["depth"])

        emptied = _wait("A's queue emptying", depth, lambda n: n == 0, plan)
        _wait("B holding every entry", lambda: int(b.queue()["depth"]), lambda n: n >= size, plan)
        cpu = [r.child.cpu_seconds() - before for r, before in zip((a, b), cpu_before, strict=True)]
        status_a, depth_b = a.queue(), int(b.queue()["depth"])
        received = b.log_times("handoff_received")
        last_received = start + (max(received) - wall) if received else None
        rss = {"A": a.peak_rss_kib(), "B": b.peak_rss_kib()}
        duplicates = len(b.log_times("handoff_duplicate"))
    finally:
        b.stop()
        a.stop()
    return Result(RELAY, size, repeat, fill_seconds=round(fill, 3),
                  applied_seconds=_since(start, seen.get("leaving")),
                  source_empty_seconds=round(emptied - start, 3),
                  receiver_all_seconds=_since(start, last_received),
                  moved=int(status_a["handedOff"]), received=depth_b, left_on_source=int(status_a["depth"]),
                  failures=int(status_a["handoffFailures"]), duplicates=duplicates,
                  sender_cpu_seconds=round(cpu[0], 3), receiver_cpu_seconds=round(cpu[1], 3),
                  rss_kib={"A front door": rss["A"][0], "A delivery": sum(rss["A"][1:]),
                           "B front door": rss["B"][0], "B delivery": sum(rss["B"][1:])},
                  rss_kind="peak (VmHWM) during the move")


def _postfix_run(plan: Plan, rundir: Path, certs: CertFiles, size: int, repeat: int) -> Result:
    password = secrets.token_urlsafe(24)
    pair = postfix_pair.start(rundir, certs, free_port(), password, "postfix")
    try:
        fill = _fill(pair.sender.port, pair.sender.username, password, certs, size, plan)
        _wait("Postfix deferring every message", lambda: postfix_pair.queued(pair.sender_root, ("deferred",)),
              lambda n: n >= size, plan)
        cpu_before = [_cpu(pair.sender.children), _cpu([pair.receiver])]
        polls, peak = [0], [pair.tree_rss_kib()]

        def sample() -> None:
            polls[0] += 1
            if polls[0] % RSS_EVERY == 0:
                peak.append(pair.tree_rss_kib())

        start = time.monotonic()
        pair.evacuate()
        applied = time.monotonic()
        emptied = _wait("Postfix's queue emptying", lambda: postfix_pair.queued(pair.sender_root),
                        lambda n: n == 0, plan, sample)
        # The sender removes a file only after the receiver's 250 (queued, fsync'd there): the receiver
        # held all of them by then. Counted once it settled (files move between queue directories).
        _wait("the receiving Postfix holding every message",
              lambda: postfix_pair.queued(pair.receiver_root, ("deferred",)), lambda n: n >= size, plan)
        cpu = [_cpu(pair.sender.children) - cpu_before[0], _cpu([pair.receiver]) - cpu_before[1]]
        received = postfix_pair.queued(pair.receiver_root)
        sent = _wait_value(lambda: postfix_pair.sent(pair.sender_root), size, plan)  # postlogd writes late
    finally:
        pair.stop()
    return Result(POSTFIX, size, repeat, fill_seconds=round(fill, 3),
                  applied_seconds=round(applied - start, 3), source_empty_seconds=round(emptied - start, 3),
                  receiver_all_seconds=None, moved=sent, received=received, left_on_source=0, failures=0,
                  duplicates=max(0, received - size),
                  sender_cpu_seconds=round(cpu[0], 3), receiver_cpu_seconds=round(cpu[1], 3),
                  rss_kib={"both instances": max(peak)},
                  rss_kind=f"largest sum of VmRSS over both instances' processes, sampled every "
                           f"{POLL_SECONDS * RSS_EVERY:g} s")


def _serving(relay: relays.Relay) -> bool:
    try:
        relay.queue()
    except (OSError, RuntimeError):
        return False
    return True


def _cpu(children: list[Child]) -> float:
    return sum(child.cpu_seconds() for child in children)


def _since(start: float, at: float | None) -> float | None:
    return round(at - start, 3) if at is not None else None


def _progress_line(r: Result) -> str:
    return (f"{r.peer:>10}  N={r.size:>6}  repeat {r.repeat}  fill {r.fill_seconds:.1f} s  "
            f"source empty after {r.source_empty_seconds:.3f} s = {r.rate:.0f} msgs/s  "
            f"moved {r.moved}, receiver holds {r.received}, failures {r.failures}, duplicates {r.duplicates}")
