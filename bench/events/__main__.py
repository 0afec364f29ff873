"""``python -m bench.events [--events N] [--quick] [--keep]``: the event store (``mta_relay.events.store``)
at the size an MTA keeps by default (1,000,000 events): how fast it fills in the writer's groups, how
much disk an event takes, how long each query of ``kubectl mta messages`` takes at that size, pruning,
and the webhook outbox's own rate. Writes bench/results/events_store.md and events_store.json.

No peer: nothing else offline keeps per-recipient delivery events queryable (Postfix's are log lines,
searched with grep). Events are generated as the relay makes them (``record.Event``, realistic field
sizes and mix); generating is outside the clock, only the store's calls are timed."""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mta_relay.events.record import Event, EventType, Response
from mta_relay.events.store import EventStore, WebhookFilter

from bench.events.store_size import size_of
from bench.frontdoor import machine

RESULTS = Path(__file__).resolve().parents[1] / "results"
GROUP = 500  # EventWriter's group_max: what one commit holds under load
QUERY_REPEATS = 200
# The share of each type in a day of an MTA's events (one Reception and one outcome per recipient,
# a few deferrals and bounces).
MIX = [(EventType.RECEPTION, 0.45), (EventType.DELIVERY, 0.40), (EventType.TRANSIENT_FAILURE, 0.08),
       (EventType.BOUNCE, 0.04), (EventType.REJECTION, 0.02), (EventType.EXPIRATION, 0.01)]
DOMAINS = ["gmail.com", "outlook.com", "yahoo.com", "example.net", "mail.example.org", "icloud.com",
           "customer-corp.example", "web.de", "gmx.net", "proton.me"]
REPLIES = {EventType.RECEPTION: (250, "2.0.0 Ok: queued as 019a3f2c7b8e4d10a1"),
           EventType.DELIVERY: (250, "2.0.0 OK  1718031234 d9443c01a7336-1f6f2c1a2b3si12345pll.123 - gsmtp"),
           EventType.TRANSIENT_FAILURE: (451, "4.7.1 Greylisted, please try again in 300 seconds"),
           EventType.BOUNCE: (550, "5.1.1 The email account that you tried to reach does not exist."),
           EventType.REJECTION: (554, "5.7.1 Sender address rejected: not owned by the credential"),
           EventType.EXPIRATION: (451, "4.4.1 Connection timed out to mx.example.net")}


class Corpus:
    """Pools the events draw from, so that every query has real matches: ~5 events per recipient,
    ~2,000 per sender, ~20,000 per credential, ~2 per message."""

    def __init__(self, n: int, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.recipients = [f"{self._word()}.{self._word()}{i}@{self.rng.choice(DOMAINS)}"
                           for i in range(n // 5)]
        self.senders = [f"{self._word()}@{self._word()}-mail.example.com" for _ in range(max(1, n // 2000))]
        self.credentials = [f"app-{self._word()}-{i}" for i in range(50)]
        self.start = time.time() - 7 * 86400  # a week of events
        self.span = 7 * 86400 - 60
        self.message_ids: list[str] = []
        self.queue_ids: list[str] = []

    def _word(self) -> str:
        return "".join(self.rng.choices("abcdefghijklmnopqrstuvwxyz", k=self.rng.randint(4, 9)))

    def events(self, n: int) -> Iterator[Event]:
        kinds, weights = zip(*MIX, strict=True)
        for i in range(n):
            if i % 2 == 0 or not self.message_ids:  # a message with two events on average
                self.message_ids.append(f"<{self.rng.getrandbits(64):016x}.{i}@{self._word()}.example.com>")
                self.queue_ids.append(f"{self.rng.getrandbits(104):026x}")
            kind = self.rng.choices(kinds, weights)[0]
            ts = self.start + self.span * i / n
            code, text = REPLIES[kind]
            yield Event(
                type=kind, queue_id=self.queue_ids[-1], sender=self.rng.choice(self.senders),
                recipient=self.rng.choice(self.recipients), credential=self.rng.choice(self.credentials),
                timestamp=ts, created=ts - 2, message_id=self.message_ids[-1], cluster="mail-prod",
                mta="mail-prod-1", size=self.rng.randint(2_000, 80_000), num_attempts=1,
                response=Response.parse(code, text),
                peer_address={"name": "gmail-smtp-in.l.google.com", "addr": "142.250.153.27"}
                if kind != EventType.RECEPTION else None,
                source_address="10.244.1.17" if kind == EventType.RECEPTION else "",
                reception_protocol="ESMTPSA" if kind == EventType.RECEPTION else "",
                delivery_protocol="ESMTP" if kind != EventType.RECEPTION else "",
                tls_protocol_version="TLSv1.3", tls_cipher="TLS_AES_256_GCM_SHA384",
                bounce_classification="InvalidRecipient" if kind == EventType.BOUNCE else "",
                bounce_kind="hard" if kind == EventType.BOUNCE else "")


def fill(store: EventStore, corpus: Corpus, n: int, webhooks: list[WebhookFilter]) -> dict[str, float]:
    """Insert n events in groups of GROUP; the time of the insert calls only."""
    spent, group = 0.0, []
    latencies: list[float] = []
    for event in corpus.events(n):
        group.append(event)
        if len(group) == GROUP:
            started = time.perf_counter()
            store.insert(group, webhooks)
            latencies.append(time.perf_counter() - started)
            spent += latencies[-1]
            group = []
    if group:
        started = time.perf_counter()
        store.insert(group, webhooks)
        spent += time.perf_counter() - started
    return {"events": n, "seconds": round(spent, 2), "events_per_s": round(n / spent),
            "group_ms_p50": round(statistics.median(latencies) * 1000, 2),
            "group_ms_p95": round(_p95(latencies) * 1000, 2)}


def commit_latency(workdir: Path, corpus: Corpus, group: int, rounds: int) -> dict[str, float]:
    """Median ms of one group commit (the writer's unit) per synchronous setting, the two alternating
    group by group so that both see the same load on the machine."""
    stores = {sync: EventStore(workdir / f"commit-{sync}-{group}.db", synchronous=sync, max_pending=10**7)
              for sync in ("NORMAL", "FULL")}
    times: dict[str, list[float]] = {sync: [] for sync in stores}
    for _ in range(rounds):
        events = list(corpus.events(group))
        for sync, store in stores.items():
            started = time.perf_counter()
            store.insert(events, [WebhookFilter("all")])
            times[sync].append(time.perf_counter() - started)
    for store in stores.values():
        store.close()
    return {sync: round(statistics.median(t) * 1000, 3) for sync, t in times.items()}


def timed(call: Callable[[], list[Event]], repeats: int) -> dict[str, float]:
    times, found = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - started)
        found.append(len(result))
    return {"ms_p50": round(statistics.median(times) * 1000, 2), "ms_p95": round(_p95(times) * 1000, 2),
            "results_mean": round(statistics.fmean(found), 1)}


def queries(store: EventStore, corpus: Corpus, rng: random.Random) -> dict[str, dict[str, float]]:
    now = time.time()
    cases: dict[str, Callable[[], list[Event]]] = {
        "recipient": lambda: store.query(recipient=rng.choice(corpus.recipients).upper()),
        "sender (latest 1000 of ~2000)": lambda: store.query(sender=rng.choice(corpus.senders)),
        "credential (latest 1000 of ~20000)": lambda: store.query(credential=rng.choice(corpus.credentials)),
        "credential, limit 50": lambda: store.query(credential=rng.choice(corpus.credentials), limit=50),
        "message-id": lambda: store.query(message_id=rng.choice(corpus.message_ids)),
        "queue id": lambda: store.query(queue_id=rng.choice(corpus.queue_ids)),
        "since (last hour) + type Bounce": lambda: store.query(since=now - 3600, types=["Bounce"]),
        "since (a random day) + type Bounce": lambda: store.query(
            since=corpus.start + rng.random() * 6 * 86400, types=["Bounce"]),
        "since + types Bounce, Expiration": lambda: store.query(
            since=corpus.start + rng.random() * 6 * 86400, types=["Bounce", "Expiration"]),
        "recipient + type + since": lambda: store.query(
            recipient=rng.choice(corpus.recipients), types=["Delivery"], since=corpus.start),
    }
    return {name: timed(call, QUERY_REPEATS) for name, call in cases.items()}


def outbox_rate(path: Path, corpus: Corpus, n: int) -> dict[str, float]:
    """A webhook catching up: n pending events taken in batches of 100 and marked delivered."""
    store = EventStore(path, max_pending=n)
    hook = [WebhookFilter("hook")]
    for start in range(0, n, GROUP):
        store.insert(list(corpus.events(min(GROUP, n - start))), hook)
    started, moved = time.perf_counter(), 0
    while (batch := store.next_batch("hook", 100)) is not None:
        moved += store.delivered(batch)
    spent = time.perf_counter() - started
    store.close()
    return {"events": moved, "events_per_s": round(moved / spent)}


def prune_time(store: EventStore, drop: int) -> dict[str, float]:
    store.max_events = store.count() - drop
    started = time.perf_counter()
    removed = store.prune()
    return {"removed": removed, "seconds": round(time.perf_counter() - started, 2)}


def _p95(values: list[float]) -> float:
    return sorted(values)[max(0, int(len(values) * 0.95) - 1)]


def render(raw: dict[str, Any]) -> str:
    f, s = raw["fill"], raw["size"]
    lines = [
        "# Event store benchmark",
        "",
        f"`mta_relay.events.store` filled with {f['events']:,} events (`python -m bench.events`): "
        "a week of an MTA's events with realistic fields (addresses, message-ids, reply texts, TLS details) "
        "and mix "
        "(45% Reception, 40% Delivery, 8% TransientFailure, 4% Bounce, 2% Rejection, 1% Expiration), "
        f"~{f['events'] // 5:,} recipients, {raw['pools']['senders']} senders, 50 credentials. One process, "
        "`synchronous=NORMAL` (the store's setting) unless said otherwise. Only the store's calls are timed.",
        "",
        "## Fill and size",
        "",
        "| | |",
        "|---|---|",
        f"| insert rate, groups of {GROUP} (the writer's group), no webhook, encoding included | "
        f"**{f['events_per_s']:,} events/s** ({f['seconds']} s; a group p50 {f['group_ms_p50']} ms, "
        f"p95 {f['group_ms_p95']} ms) |",
        f"| on disk at {s['events']:,} events (database + WAL after a checkpoint) | "
        f"**{s['bytes'] / 2**20:,.0f} MiB, {s['bytes_per_event']} bytes/event** |",
        "| by object, MiB | " + ", ".join(f"{k} {v}" for k, v in s["by_object_mib"].items()) + " |",
        f"| prune of the oldest {raw['prune']['removed']:,} beyond max_events | "
        f"{raw['prune']['seconds']} s |",
        f"| outbox: a webhook catching up, batches of 100 taken and marked delivered | "
        f"{raw['outbox']['events_per_s']:,} events/s ({raw['outbox']['events']:,} events) |",
        "",
        "## One group commit: synchronous NORMAL vs FULL (WAL)",
        "",
        "Median ms per `insert` of a group into a fresh store with one all-events webhook (300, 100 and 30 "
        "groups; the two settings alternate group by group).",
        "",
        "| group | NORMAL ms | FULL ms |",
        "|---:|---:|---:|",
    ]
    for group, row in raw["commit"].items():
        lines.append(f"| {group} | {row['NORMAL']} | {row['FULL']} |")
    lines += ["", f"## Queries at {s['events']:,} events", "",
              f"`EventStore.query` (latest `limit`=1000 unless said otherwise), {QUERY_REPEATS} queries "
              "each with values drawn at random from the pools; the time includes decoding the events.", "",
              "| filter | median ms | p95 ms | events returned (mean) |", "|---|---:|---:|---:|"]
    for name, q in raw["queries"].items():
        lines.append(f"| {name} | {q['ms_p50']} | {q['ms_p95']} | {q['results_mean']} |")
    lines += ["", "## Notes", "",
              "- An insert's time is mostly Python encoding the events (`Event.to_json`, the JSON text, in "
              "the writer's thread), not SQLite; a query returning 1000 events mostly decoding them.",
              "- The machine is shared (see the load averages): the fill ran under more load than the commit "
              "comparison, whose 500-event groups show the unloaded cost per group.",
              "- FULL adds one WAL sync per commit; the difference is that sync on this disk.",
              ""]
    lines += ["## Machine", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in raw["machine"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="20,000 events")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (the databases)")
    parser.add_argument("--out", type=Path, default=RESULTS / "events_store.md")
    args = parser.parse_args()
    n = 20_000 if args.quick else args.events
    workdir = Path(tempfile.mkdtemp(prefix="bench-events-"))
    about = {k: v for k, v in machine.describe(workdir).items() if k not in ("postfix", "dovecot")}
    about["sqlite"] = sqlite3.sqlite_version
    corpus = Corpus(n)
    path = workdir / "events" / "events.db"
    store = EventStore(path, max_events=n)
    print(f"filling {n:,} events into {path}", flush=True)
    raw: dict[str, Any] = {"fill": fill(store, corpus, n, []),
                           "pools": {"recipients": len(corpus.recipients), "senders": len(corpus.senders)}}
    print(raw["fill"], flush=True)
    raw["size"] = size_of(path)
    print(raw["size"], flush=True)
    raw["queries"] = queries(store, corpus, random.Random(11))
    raw["prune"] = prune_time(store, max(1, n // 100))
    store.close()
    side = Corpus(20_000, seed=3)
    raw["outbox"] = outbox_rate(workdir / "outbox.db", side, min(n, 100_000))
    raw["commit"] = {str(g): commit_latency(workdir, side, g, rounds) for g, rounds in ((1, 300), (50, 100),
                                                                                        (500, 30))}
    about["load average at end"] = machine.load_average()
    raw["machine"] = about
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(raw))
    args.out.with_suffix(".json").write_text(json.dumps(raw, indent=1) + "\n")
    print(f"wrote {args.out}")
    if args.keep:
        print(f"kept {workdir}")
    else:
        for p in sorted(workdir.rglob("*"), reverse=True):
            p.rmdir() if p.is_dir() else p.unlink()
        workdir.rmdir()


if __name__ == "__main__":
    main()
