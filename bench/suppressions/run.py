"""One suppression benchmark run:

1. **Import**, repeated, the peers taking turns: Postfix builds its table (``postmap``) from the
   addresses; a fresh relay pair (A and B) gets them through A's admin API in batches of 10,000, and the
   clock runs on until B holds every one (B pulls A's changes every exchange interval, pages of 5,000).
   RSS of each relay's processes before and after, their CPU, the database on disk.
2. **RCPT**: on the last pair, B (the list reached it by the exchange), a relay with an empty list, a
   Postfix with the table and one with an empty table each serve one SMTP session per round (``rcpt``),
   listed and unlisted addresses alternating; the peers take turns, the first moving on by one a round.
3. **Lookup in process** (``lookup``) on B's database file once every relay is stopped, and on an empty
   one.

Every wait is bounded; the run fails (keeping its directory) rather than report a partial figure."""

from __future__ import annotations

import hashlib
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.frontdoor import relay_peer
from bench.frontdoor.certs import CertFiles, write_certs
from bench.frontdoor.children import free_port
from bench.suppressions import lookup, postfix, rcpt, relays
from bench.suppressions.relays import Relay

POD_A, POD_B, POD_ALONE = "bench-mta-0", "bench-mta-1", "bench-mta-lone"
RELAY_FULL, RELAY_EMPTY = "mta-relay B, full list", "mta-relay, empty list"
POSTFIX_FULL, POSTFIX_EMPTY = "Postfix, full table", "Postfix, empty table"
BATCH = 10_000  # the admin API's limit per request
POLL_SECONDS = 0.1
SETTLE_SECONDS = 3.0  # a fresh pair idles this long before "before" is read (first exchanges done)
_DOMAINS = ("example.net", "example.org", "mail.example.com", "corp.example", "example.co.uk",
            "users.example.net", "shop.example", "news.example.org")
_FIRST = ("anna", "ben", "chloe", "david", "emma", "felix", "grace", "hugo", "iris", "jon", "kim", "leo",
          "mia", "nils", "olga", "paul", "rosa", "sam", "tara", "ugo", "vera", "will", "yuki", "zoe")


@dataclass(frozen=True)
class Plan:
    entries: int
    import_repeats: int
    rounds: int
    rcpt_pairs: int  # listed + unlisted addresses per session: twice this many RCPTs
    lookups: int  # addresses per in-process timing pass (hits, and as many misses)
    lookup_repeats: int
    batch: int = BATCH
    cap_seconds: float = 1800  # the longest the import or the wait for B may take
    stall_seconds: float = 120  # B's count not moving for this long: the exchange is stuck

    def bounds(self) -> str:
        return (f"{self.entries:,} entries, batches of {self.batch:,}; import {self.import_repeats} times "
                f"per peer; {self.rounds} RCPT rounds of {2 * self.rcpt_pairs:,} RCPTs per peer; in-process "
                f"lookups {self.lookup_repeats} passes of {self.lookups:,} hits and {self.lookups:,} misses")


FULL = Plan(1_000_000, import_repeats=3, rounds=5, rcpt_pairs=1000, lookups=20_000, lookup_repeats=9)
QUICK = Plan(100_000, import_repeats=2, rounds=3, rcpt_pairs=300, lookups=5000, lookup_repeats=5)


@dataclass
class ImportRun:
    peer: str  # "mta-relay" or "Postfix"
    repeat: int
    seconds: float  # relay: first POST → last answer; Postfix: postmap
    cpu_seconds: dict[str, float]  # relay: A and B during the import and until B holds all; Postfix: postmap
    disk_bytes: dict[str, int]
    entries: int = 0
    reach_peer_seconds: float | None = None  # relay: first POST → B holds all
    reach_after_import_seconds: float | None = None  # relay: last POST answered → B holds all
    rss_before_kib: dict[str, int] = field(default_factory=dict)
    rss_after_kib: dict[str, int] = field(default_factory=dict)
    peak_kib: dict[str, int] = field(default_factory=dict)  # VmHWM summed over each relay's processes
    load: str = ""

    @property
    def rate(self) -> float:
        """Entries per second of the import."""
        return 0.0 if not self.seconds else self.entries / self.seconds


@dataclass
class Round:
    peer: str
    round: int
    listed_us: dict[str, float]  # median, p90, p99, n
    unlisted_us: dict[str, float]
    rss_in_session_kib: int  # relay: its processes; Postfix: the session's smtpd
    load: str


@dataclass
class Outcome:
    imports: list[ImportRun] = field(default_factory=list)
    rounds: list[Round] = field(default_factory=list)
    replies: dict[str, str] = field(default_factory=dict)  # peer → its reply to a listed address
    memory_kib: dict[str, dict[str, int]] = field(default_factory=dict)  # phase → MTA → RSS
    disk_after_stop_bytes: dict[str, int] = field(default_factory=dict)
    lookups: dict[str, lookup.LookupTimes] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    workdir: Path = Path()


def addresses(start: int, count: int) -> list[str]:
    """Addresses that look like people's and never repeat: a first name and 64 bits of a hash of the
    index, in one of a few domains; the same index gives the same address in every run."""
    found = []
    for i in range(start, start + count):
        digest = hashlib.blake2b(i.to_bytes(8, "little"), digest_size=10, key=b"mta-bench").digest()
        local = f"{_FIRST[digest[8] % len(_FIRST)]}.{digest[:8].hex()}"
        found.append(f"{local}@{_DOMAINS[digest[9] % len(_DOMAINS)]}")
    return found


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))]
    return {"median": round(statistics.median(ordered), 1), "p90": round(rank(0.9), 1),
            "p99": round(rank(0.99), 1), "n": len(ordered)}


def _peak_kib(relay: Relay) -> int:
    return sum(relays.status_kib(pid, "VmHWM") for pid in relay.processes())


def _relay_import(plan: Plan, rundir: Path, certs: CertFiles, closed_port: int, listed: list[str],
                  repeat: int, progress: Callable[[str], None]) -> tuple[ImportRun, list[Relay]]:
    pair = relays.start_cluster(rundir, certs, closed_port, [POD_A, POD_B], prefix="relay")
    try:
        a, b = pair
        time.sleep(SETTLE_SECONDS)
        result = ImportRun("mta-relay", repeat, 0.0, {}, {}, entries=len(listed), load=load_average())
        result.rss_before_kib = {"A": a.rss_kib(), "B": b.rss_kib()}
        cpu = {"A": a.cpu_seconds(), "B": b.cpu_seconds()}
        started = time.monotonic()
        changed = 0
        for i in range(0, len(listed), plan.batch):
            changed += a.import_batch(listed[i:i + plan.batch])
            if time.monotonic() - started > plan.cap_seconds:
                raise RuntimeError(f"import: not done within {plan.cap_seconds:g} s")
        imported = time.monotonic()
        if changed != len(listed):
            raise RuntimeError(f"import: A changed {changed} rows for {len(listed)} new addresses")
        cpu_import = {"A": a.cpu_seconds() - cpu["A"], "B": b.cpu_seconds() - cpu["B"]}
        _wait_for_peer(plan, b, listed, started)
        reached = time.monotonic()
        result.seconds = imported - started
        result.reach_peer_seconds = reached - started
        result.reach_after_import_seconds = reached - imported
        result.cpu_seconds = {
            "A import": round(cpu_import["A"], 2), "B import": round(cpu_import["B"], 2),
            "A until B holds all": round(a.cpu_seconds() - cpu["A"], 2),
            "B until it holds all": round(b.cpu_seconds() - cpu["B"], 2)}
        if (total := b.total()) != len(listed) or (total_a := a.total()) != len(listed):
            raise RuntimeError(f"B holds {total}, A {total_a}, of {len(listed)}")
        result.rss_after_kib = {"A": a.rss_kib(), "B": b.rss_kib()}
        result.peak_kib = {"A": _peak_kib(a), "B": _peak_kib(b)}
        result.disk_bytes = {f"{name} {part}": size for name, relay in (("A", a), ("B", b))
                             for part, size in relay.db_bytes().items()}
        progress(f"mta-relay import {repeat}: {result.seconds:.1f} s ({result.rate:,.0f}/s), B holds all "
                 f"after {result.reach_peer_seconds:.1f} s; RSS A {result.rss_after_kib['A'] // 1024} MiB, "
                 f"B {result.rss_after_kib['B'] // 1024} MiB; load {load_average()}")
        return result, pair
    except BaseException:
        for relay in pair:
            relay.stop()
        raise


def _wait_for_peer(plan: Plan, b: Relay, listed: list[str], started: float) -> None:
    """Until B holds every address: its changes arrive in A's order, so first the last address imported
    (a primary-key read per poll), then B's count (a scan of the table, so polled only at the end)."""
    while not b.holds(listed[-1]):
        if time.monotonic() - started > plan.cap_seconds:
            raise RuntimeError(f"B did not get the last address within {plan.cap_seconds:g} s")
        time.sleep(POLL_SECONDS)
    last, moved = -1, time.monotonic()
    while (total := b.total()) < len(listed):
        if total != last:
            last, moved = total, time.monotonic()
        elif time.monotonic() - moved > plan.stall_seconds:
            raise RuntimeError(f"B stuck at {total} of {len(listed)}")
        time.sleep(POLL_SECONDS)


def _postfix_import(rundir: Path, listed: list[str], repeat: int,
                    progress: Callable[[str], None]) -> tuple[ImportRun, Path]:
    table = rundir / postfix.TABLE
    postfix.write_table(table, listed)
    load = load_average()
    wall, cpu = postfix.postmap(table)
    db = table.with_name(postfix.TABLE + ".db").stat().st_size
    result = ImportRun("Postfix", repeat, wall, {"postmap": round(cpu, 2)},
                       {"text file": table.stat().st_size, "hash .db": db}, entries=len(listed), load=load)
    progress(f"Postfix postmap {repeat}: {wall:.1f} s ({result.rate:,.0f}/s), .db {db / 2**20:.0f} MiB")
    return result, table


@dataclass
class _Target:
    name: str
    port: int
    username: str
    password: str
    refused: bool
    rss: Callable[[], int]


def _rcpt_rounds(plan: Plan, targets: list[_Target], listed: list[str], unlisted_pool: list[str],
                 certs: CertFiles, done: Outcome, progress: Callable[[str], None]) -> None:
    tls = certs.client_context()
    rng = random.Random(20261)
    pool = iter(unlisted_pool)
    for target in targets:  # warm-up: the session path, the first smtpd, TLS, the caches
        rcpt.session(target.port, tls, target.username, target.password, rng.sample(listed, 20),
                     [next(pool) for _ in range(20)], refused=target.refused)
    for number in range(1, plan.rounds + 1):
        chosen = rng.sample(listed, plan.rcpt_pairs)
        fresh = [next(pool) for _ in range(plan.rcpt_pairs)]
        shift = (number - 1) % len(targets)
        for target in targets[shift:] + targets[:shift]:
            rss: list[int] = []
            times = rcpt.session(target.port, tls, target.username, target.password, chosen, fresh,
                                 refused=target.refused, during=lambda t=target, out=rss: out.append(t.rss()))
            if times.listed_reply:
                done.replies.setdefault(target.name, times.listed_reply)
            done.rounds.append(Round(target.name, number, _summary(times.listed_us),
                                     _summary(times.unlisted_us), rss[0], load_average()))
        line = ", ".join(f"{r.peer} {r.listed_us['median']:.0f}/{r.unlisted_us['median']:.0f}"
                         for r in done.rounds if r.round == number)
        progress(f"RCPT round {number} (µs median listed/unlisted): {line}")


def execute(plan: Plan, *, keep: bool = False, progress: Callable[[str], None] = print) -> Outcome:
    workdir = Path(tempfile.mkdtemp(prefix="mta-suppressions-"))
    workdir.chmod(0o755)  # Postfix's unprivileged processes walk through it to their queues
    done = Outcome(workdir=workdir)
    running: list[Relay] = []
    instances: list[postfix.PostfixAccess] = []
    try:
        certs = write_certs(workdir / "certs")  # one certificate: the cluster's, shared by its relays
        closed_port = free_port()  # delivery target that nothing listens on: nothing is ever sent
        listed = addresses(0, plan.entries)
        spare = plan.lookups + (plan.rounds + 1) * plan.rcpt_pairs + 20 * 4
        unlisted = addresses(plan.entries, spare)
        if len(set(listed)) != len(listed) or set(unlisted) & set(listed):
            raise AssertionError("the generated addresses repeat")
        table = Path()
        for repeat in range(1, plan.import_repeats + 1):
            order = ("relay", "postfix") if repeat % 2 else ("postfix", "relay")
            for peer in order:
                rundir = workdir / f"{peer}-{repeat}"
                rundir.mkdir()
                rundir.chmod(0o755)
                if peer == "postfix":
                    if table != Path() and not keep:
                        shutil.rmtree(table.parent, ignore_errors=True)
                    result, table = _postfix_import(rundir, listed, repeat, progress)
                else:
                    for relay in running:  # the pair before: only the last one is kept running
                        relay.stop()
                    if running and not keep:
                        shutil.rmtree(running[0].spool.parent, ignore_errors=True)
                    result, running = _relay_import(plan, rundir, certs, closed_port, listed, repeat,
                                                    progress)
                done.imports.append(result)
        a, b = running
        empty_dir = workdir / "postfix-empty-table"
        empty_dir.mkdir()
        postfix.write_table(empty_dir / postfix.TABLE, [])
        postfix.postmap(empty_dir / postfix.TABLE)
        (workdir / "lone").mkdir()
        lone = relays.start_cluster(workdir / "lone", certs, closed_port, [POD_ALONE], prefix="lone")[0]
        running.append(lone)
        password = relay_peer.generated_password()
        for name, source in (("postfix-full", table), ("postfix-empty", empty_dir / postfix.TABLE)):
            instances.append(postfix.start(workdir, certs, closed_port, password, name=name,
                                           table_ready=source))
        full_pf, empty_pf = instances
        done.memory_kib["before RCPT rounds"] = {"A": a.rss_kib(), "B": b.rss_kib(), "lone": lone.rss_kib(),
                                                 POSTFIX_FULL: full_pf.rss_kib(),
                                                 POSTFIX_EMPTY: empty_pf.rss_kib()}
        targets = [
            _Target(RELAY_FULL, b.smtp_port, relay_peer.USERNAME, b.password, True, b.rss_kib),
            _Target(POSTFIX_FULL, full_pf.port, "bench", password, True,
                    lambda: sum(full_pf.smtpd_rss_kib())),
            _Target(RELAY_EMPTY, lone.smtp_port, relay_peer.USERNAME, lone.password, False, lone.rss_kib),
            _Target(POSTFIX_EMPTY, empty_pf.port, "bench", password, False,
                    lambda: sum(empty_pf.smtpd_rss_kib())),
        ]
        _rcpt_rounds(plan, targets, listed, unlisted[plan.lookups:], certs, done, progress)
        done.memory_kib["after RCPT rounds"] = {"A": a.rss_kib(), "B": b.rss_kib(), "lone": lone.rss_kib(),
                                                POSTFIX_FULL: full_pf.rss_kib(),
                                                POSTFIX_EMPTY: empty_pf.rss_kib()}
        for instance in instances:
            instance.stop()
        instances.clear()
        for relay in running:
            relay.stop()
        done.disk_after_stop_bytes = {f"B {part}": size for part, size in b.db_bytes().items()}
        stores = {"full (B's file)": (relays.store_path(b.spool), True),
                  "empty": (relays.store_path(lone.spool), False)}
        running.clear()
        rng = random.Random(7)
        done.lookups = lookup.measure(stores, rng.sample(listed, plan.lookups), unlisted[:plan.lookups],
                                      plan.lookup_repeats)
        progress("in process (µs/lookup, median hit/miss): " + ", ".join(
            f"{name} {statistics.median(t.hit_us):.1f}/{statistics.median(t.miss_us):.1f}"
            for name, t in done.lookups.items()))
    except BaseException:
        keep = True  # the logs of the run that failed are what one needs to see why
        progress(f"failed; kept {workdir}")
        raise
    finally:
        for instance in instances:
            instance.stop()
        for relay in running:
            relay.stop()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return done


def as_json(outcome: Outcome) -> dict[str, Any]:
    from dataclasses import asdict

    return {"imports": [asdict(r) | {"entries_per_s": round(r.rate)} for r in outcome.imports],
            "rounds": [asdict(r) for r in outcome.rounds], "replies": outcome.replies,
            "memory_kib": outcome.memory_kib, "disk_after_stop_bytes": outcome.disk_after_stop_bytes,
            "lookups_us": {name: asdict(t) for name, t in outcome.lookups.items()}, "notes": outcome.notes}
