"""The MTA's local event store and webhook outbox: one SQLite database (``<spool root>/events/events.db``
on the MTA's volume) that both processes of an MTA write at once — the front door its Reception and
Rejection events, the delivery process the rest — and that ``kubectl mta messages`` and the webhook
sender (``webhooks``) read. This module owns the database's format; an event's own format is
``record``'s (a row holds ``Event.to_json()``, split into indexed columns and a JSON rest).

Bounded twice. Events older than ``retention`` and the oldest beyond ``max_events`` are pruned
(``prune``), except those still waiting in a webhook's outbox. Each webhook's outbox holds at most
``max_pending`` events: past that its oldest are dropped and counted (``dropped``), so a receiver that
stays down fills neither the disk nor the mail path.

Concurrency. WAL mode, so readers never wait for the writer and the two processes' writers take turns;
every write is one short ``BEGIN IMMEDIATE`` transaction (the write lock taken up front, so a waiting
writer goes through ``busy_timeout`` instead of failing on a read-to-write upgrade), pruning in chunks
of ``PRUNE_CHUNK`` rows. WAL needs shared memory between the processes: a local file system, as the
MTA's volume is (never NFS).

Durability: ``synchronous=NORMAL`` in WAL. A commit has been written into the WAL file (the kernel holds
it) when it returns, so a killed process loses no committed transaction; a crash of the machine may roll
back the transactions since the WAL was last synced (at each checkpoint), but never corrupts the
database. FULL would sync the WAL at every commit — measured by ``bench.events``
(results/events_store.md) at +0.35 ms for a one-event group, +0.9 ms for 50 — up to one more sync per
group and process on the disk where the spool syncs every message, for little: an event waits up to
``EventWriter.group_seconds`` in memory before its commit anyway, and a delivery mark lost to a machine
crash only resends a batch under the same webhook-id.

Addresses are matched case-insensitively, the whole address (ASCII letters; SQLite's ``lower``):
domains are case-insensitive by definition, and local parts are in practice (RFC 5321 allows a server
to tell ``Bob`` from ``bob``; hardly any does), so a search that finds ``Bob@Example.com`` for
``bob@example.com`` is what an operator means. Message-ids, queue ids and credentials match exactly.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mta_relay.events.record import Event, new_event_id

log = logging.getLogger("mta_relay.events")
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 10_000  # the other process's longest transaction (a prune chunk) is far shorter
PRUNE_CHUNK = 5_000  # rows deleted per transaction: the other process's writes wait at most one chunk
DEFAULT_RETENTION = 7 * 24 * 3600.0
DEFAULT_MAX_EVENTS = 1_000_000
DEFAULT_MAX_PENDING = 100_000
WAL_LIMIT_BYTES = 64 * 1024 * 1024  # the WAL is truncated to this after a checkpoint
ERROR_LOG_SECONDS = 10.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- commit order (AUTOINCREMENT: never reused)
    ts REAL NOT NULL,
    type TEXT NOT NULL,
    queue_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    recipient TEXT NOT NULL,
    credential TEXT NOT NULL,
    body TEXT NOT NULL  -- the rest of Event.to_json(), fields at their defaults left out
);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
CREATE INDEX IF NOT EXISTS events_recipient ON events(lower(recipient), ts);
CREATE INDEX IF NOT EXISTS events_sender ON events(lower(sender), ts);
CREATE INDEX IF NOT EXISTS events_credential ON events(credential, ts);
CREATE INDEX IF NOT EXISTS events_message_id ON events(message_id, ts);
CREATE INDEX IF NOT EXISTS events_queue_id ON events(queue_id, ts);
CREATE INDEX IF NOT EXISTS events_type ON events(type, ts);
-- events a leaving peer hands over are stored once (``add``)
CREATE INDEX IF NOT EXISTS events_event_id ON events(json_extract(body, '$.event_id'));
CREATE TABLE IF NOT EXISTS webhooks (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    pending INTEGER NOT NULL DEFAULT 0,  -- outbox rows: kept here, counting them is O(rows)
    dropped INTEGER NOT NULL DEFAULT 0  -- events dropped by the outbox limit, ever
);
CREATE TABLE IF NOT EXISTS outbox (
    webhook INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    batch TEXT,  -- NULL until taken into the webhook's batch
    PRIMARY KEY (webhook, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS outbox_seq ON outbox(seq);
CREATE INDEX IF NOT EXISTS outbox_batch ON outbox(batch) WHERE batch IS NOT NULL;
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,
    webhook INTEGER NOT NULL UNIQUE,  -- one formed batch per webhook at a time: its oldest events
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL DEFAULT 0
);
"""

# The event fields that have columns; the JSON rest holds the others.
_COLUMN_KEYS = ("timestamp", "type", "id", "message_id", "sender", "recipient", "credential")
_SELECT = "SELECT seq, ts, type, queue_id, message_id, sender, recipient, credential, body FROM events"
# Fields whose value equals the default are left out of the JSON rest (from_json restores them).
_DEFAULTS: dict[str, Any] = {("id" if f.name == "queue_id" else f.name): f.default
                             for f in dataclasses.fields(Event) if f.default is not dataclasses.MISSING}


class StoreError(Exception):
    """The database has a schema this code does not know."""


@dataclass(frozen=True)
class WebhookFilter:
    """Which events a webhook gets: an empty set means all."""

    name: str
    types: frozenset[str] = frozenset()
    credentials: frozenset[str] = frozenset()

    def matches(self, event: Event) -> bool:
        return ((not self.types or event.type in self.types)
                and (not self.credentials or event.credential in self.credentials))


@dataclass(frozen=True)
class Batch:
    """A webhook's batch: formed once from its oldest pending events, then resent unchanged (same id,
    same events) until delivered, dropped or expired."""

    id: str  # the Standard Webhooks webhook-id
    webhook: str
    events: tuple[Event, ...]
    created: float  # Unix time the batch was formed
    attempts: int  # failed attempts so far
    next_attempt_at: float  # Unix time; 0 for a batch not tried yet


_REST_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  # made once, not per row


def encode_row(event: Event) -> tuple[float, str, str, str, str, str, str, str]:
    data = event.to_json()
    rest = {k: v for k, v in data.items()
            if k not in _COLUMN_KEYS and not (k in _DEFAULTS and v == _DEFAULTS[k])}
    return (event.timestamp, str(event.type), event.queue_id, event.message_id, event.sender,
            event.recipient, event.credential, _REST_JSON.encode(rest))


def decode_row(row: Sequence[Any]) -> Event:
    """A row of ``_SELECT`` (seq first) back into its event."""
    data = json.loads(row[8])
    data.update(timestamp=row[1], type=row[2], id=row[3], message_id=row[4], sender=row[5],
                recipient=row[6], credential=row[7])
    return Event.from_json(data)


class EventStore:
    """One connection to the store. Safe to share between threads (a lock serializes its calls), so the
    webhook sender can call it through ``asyncio.to_thread``; each call is one short transaction."""

    def __init__(self, path: Path, *, retention: float = DEFAULT_RETENTION,
                 max_events: int = DEFAULT_MAX_EVENTS, max_pending: int = DEFAULT_MAX_PENDING,
                 synchronous: str = "NORMAL") -> None:
        self.path, self.retention = path, retention
        self.max_events, self.max_pending = max_events, max_pending
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Addresses are personal data: owner-only. SQLite gives its -wal and -shm files the mode of the
        # database file, so creating that one 0600 is enough.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        self._lock = threading.Lock()
        # timeout: SQLite's busy_timeout. isolation_level None: transactions are ours (_write, _read).
        self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                   check_same_thread=False)
        try:
            self._setup(synchronous)
        except BaseException:
            self._db.close()
            raise

    def _setup(self, synchronous: str) -> None:
        db = self._db
        db.execute("PRAGMA journal_mode = WAL")  # persistent in the file; the first opener sets it
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError("synchronous is NORMAL or FULL")
        db.execute(f"PRAGMA synchronous = {synchronous}")
        db.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}")
        with self._write() as cur:
            version = cur.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise StoreError(f"event store schema {version}, this MTA knows {SCHEMA_VERSION}")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    cur.execute(statement)
            cur.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction, the write lock taken at its start (waits up to busy_timeout)."""
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN")  # one snapshot for the statements of one call
            try:
                yield cur
            finally:
                cur.execute("COMMIT")

    # --- events ---------------------------------------------------------------------------------
    def insert(self, events: Sequence[Event], webhooks: Sequence[WebhookFilter]) -> None:
        """Store ``events`` and add each to the outbox of every webhook whose filter matches, in one
        transaction; then trim those outboxes to ``max_pending``."""
        if not events:
            return
        rows = [encode_row(e) for e in events]
        with self._write() as cur:
            seqs = [cur.execute("INSERT INTO events (ts, type, queue_id, message_id, sender, recipient, "
                                "credential, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row).lastrowid
                    for row in rows]
            for webhook in webhooks:
                matching = [seq for seq, event in zip(seqs, events, strict=True) if webhook.matches(event)]
                if not matching:
                    continue
                wid = _ensure_webhook(cur, webhook.name)
                cur.executemany("INSERT INTO outbox (webhook, seq) VALUES (?, ?)",
                                [(wid, s) for s in matching])
                cur.execute("UPDATE webhooks SET pending = pending + ? WHERE id = ?", (len(matching), wid))
                self._trim(cur, wid)

    def query(self, *, recipient: str | None = None, sender: str | None = None, credential: str | None = None,
              message_id: str | None = None, queue_id: str | None = None, since: float | None = None,
              types: Collection[str] | None = None, limit: int = 1000) -> list[Event]:
        """The latest ``limit`` events that pass every filter given, oldest first. ``since``: at or
        after this Unix time; ``types``: any of these (None: all)."""
        if limit <= 0 or (types is not None and not types):
            return []
        # Walk the index of the most selective filter given (INDEXED BY: the plan does not depend on
        # table statistics); the other filters are checked on the rows it yields.
        conditions: list[tuple[str, str, object]] = []  # (index, condition, value)
        if queue_id is not None:
            conditions.append(("events_queue_id", "queue_id = ?", queue_id))
        if message_id is not None:
            conditions.append(("events_message_id", "message_id = ?", message_id))
        if recipient is not None:
            conditions.append(("events_recipient", "lower(recipient) = lower(?)", recipient))
        if sender is not None:
            conditions.append(("events_sender", "lower(sender) = lower(?)", sender))
        if credential is not None:
            conditions.append(("events_credential", "credential = ?", credential))
        with self._read() as cur:
            if conditions or types is None:
                index = conditions[0][0] if conditions else "events_ts"
                type_list = sorted(types) if types is not None else None
                found = self._select(cur, index, conditions, since, type_list, limit)
            else:
                # Types alone: one walk of (type, ts) per type, merged; an IN over several types would
                # make SQLite sort every match.
                found = []
                for kind in sorted(types):
                    found += self._select(cur, "events_type", [("", "type = ?", kind)], since, None, limit)
                found.sort(key=lambda r: (r[1], r[0]), reverse=True)
                del found[limit:]
        return [decode_row(r) for r in reversed(found)]

    @staticmethod
    def _select(cur: sqlite3.Cursor, index: str, conditions: list[tuple[str, str, object]],
                since: float | None, types: list[str] | None, limit: int) -> list[Any]:
        where = [c for _, c, _ in conditions]
        params: list[object] = [v for _, _, v in conditions]
        if since is not None:
            where.append("ts >= ?")
            params.append(since)
        if types is not None:
            where.append(f"type IN ({', '.join('?' * len(types))})")
            params += types
        sql = (f"{_SELECT} INDEXED BY {index}" + (f" WHERE {' AND '.join(where)}" if where else "")
               + " ORDER BY ts DESC, seq DESC LIMIT ?")
        return cur.execute(sql, [*params, limit]).fetchall()

    def count(self) -> int:
        with self._read() as cur:
            return int(cur.execute("SELECT count(*) FROM events").fetchone()[0])

    def prune(self, now: float | None = None) -> int:
        """Delete events older than ``retention`` and the oldest beyond ``max_events``, never one still
        in an outbox; return how many. In chunks, each its own transaction."""
        now = time.time() if now is None else now
        removed = 0
        while True:  # past retention, oldest first
            with self._write() as cur:
                done = cur.execute(
                    "DELETE FROM events WHERE seq IN (SELECT seq FROM events INDEXED BY events_ts "
                    "WHERE ts < ? AND NOT EXISTS (SELECT 1 FROM outbox WHERE outbox.seq = events.seq) "
                    "ORDER BY ts LIMIT ?)",
                    (now - self.retention, PRUNE_CHUNK)).rowcount
            removed += done
            if done < PRUNE_CHUNK:
                break
        excess = self.count() - self.max_events
        while excess > 0:  # beyond max_events, oldest first
            with self._write() as cur:
                done = cur.execute(
                    "DELETE FROM events WHERE seq IN (SELECT seq FROM events INDEXED BY events_ts WHERE NOT "
                    "EXISTS (SELECT 1 FROM outbox WHERE outbox.seq = events.seq) ORDER BY ts LIMIT ?)",
                    (min(excess, PRUNE_CHUNK),)).rowcount
            removed += done
            excess -= done
            if done == 0:  # the rest are all pending
                break
        return removed

    # --- outbox ---------------------------------------------------------------------------------
    def next_batch(self, webhook: str, max_events: int) -> Batch | None:
        """The webhook's formed batch if one waits (the same id and events as before, its attempts and
        due time), else a new one of its oldest pending events (at most ``max_events``), stored before
        this returns; None when nothing is pending."""
        with self._write() as cur:
            wid = _webhook_id(cur, webhook)
            if wid is None:
                return None
            row = cur.execute("SELECT id, created, attempts, next_attempt FROM batches WHERE webhook = ?",
                              (wid,)).fetchone()
            if row is not None:
                events = _batch_events(cur, row[0])
                if events:
                    return Batch(row[0], webhook, events, row[1], row[2], row[3])
                cur.execute("DELETE FROM batches WHERE id = ?", (row[0],))  # emptied: form a new one
            seqs = [s for (s,) in cur.execute("SELECT seq FROM outbox WHERE webhook = ? AND batch IS NULL "
                                              "ORDER BY seq LIMIT ?", (wid, max_events))]
            if not seqs:
                return None
            batch_id, created = "msg_" + new_event_id(), time.time()
            cur.execute("INSERT INTO batches (id, webhook, created) VALUES (?, ?, ?)",
                        (batch_id, wid, created))
            cur.executemany("UPDATE outbox SET batch = ? WHERE webhook = ? AND seq = ?",
                            [(batch_id, wid, s) for s in seqs])
            return Batch(batch_id, webhook, _batch_events(cur, batch_id), created, 0, 0.0)

    def delivered(self, batch: Batch) -> int:
        """The receiver took the batch: its events leave the outbox. How many did (0 if the outbox
        limit or ``forget_webhook`` dropped the batch meanwhile)."""
        with self._write() as cur:
            done = cur.execute("DELETE FROM outbox WHERE batch = ?", (batch.id,)).rowcount
            cur.execute("DELETE FROM batches WHERE id = ?", (batch.id,))
            cur.execute("UPDATE webhooks SET pending = pending - ? WHERE name = ?", (done, batch.webhook))
            return done

    def failed(self, batch: Batch, next_attempt_at: float) -> None:
        """An attempt failed: count it and store when the next one is due."""
        with self._write() as cur:
            cur.execute("UPDATE batches SET attempts = attempts + 1, next_attempt = ? WHERE id = ?",
                        (next_attempt_at, batch.id))

    def expire(self, webhook: str, before: float) -> int:
        """Drop the webhook's pending events that happened before ``before`` (the whole batch if its
        oldest did); return how many."""
        with self._write() as cur:
            wid = _webhook_id(cur, webhook)
            if wid is None:
                return 0
            dropped = 0
            row = cur.execute("SELECT b.id, min(e.ts) FROM batches b JOIN outbox o ON o.batch = b.id "
                              "JOIN events e ON e.seq = o.seq WHERE b.webhook = ?", (wid,)).fetchone()
            if row is not None and row[0] is not None and row[1] < before:
                dropped += cur.execute("DELETE FROM outbox WHERE batch = ?", (row[0],)).rowcount
                cur.execute("DELETE FROM batches WHERE id = ?", (row[0],))
            dropped += cur.execute(
                "DELETE FROM outbox WHERE webhook = ? AND seq IN (SELECT o.seq FROM outbox o JOIN events e "
                "ON e.seq = o.seq WHERE o.webhook = ? AND o.batch IS NULL AND e.ts < ?)",
                (wid, wid, before)).rowcount
            cur.execute("UPDATE webhooks SET pending = pending - ? WHERE id = ?", (dropped, wid))
            return dropped

    def pending(self, webhook: str) -> tuple[int, float | None]:
        """Events waiting for the webhook (its batch included) and the time of the oldest."""
        with self._read() as cur:
            row = cur.execute("SELECT w.pending, (SELECT e.ts FROM events e WHERE e.seq = (SELECT min(o.seq) "
                              "FROM outbox o WHERE o.webhook = w.id)) FROM webhooks w WHERE w.name = ?",
                              (webhook,)).fetchone()
        return (0, None) if row is None else (int(row[0]), row[1])

    def dropped(self, webhook: str) -> int:
        """Events the outbox limit dropped for the webhook, ever (both processes; kept across restarts,
        so a counter built on it never goes back)."""
        with self._read() as cur:
            row = cur.execute("SELECT dropped FROM webhooks WHERE name = ?", (webhook,)).fetchone()
        return 0 if row is None else int(row[0])

    def webhooks(self) -> list[str]:
        with self._read() as cur:
            return [name for (name,) in cur.execute("SELECT name FROM webhooks ORDER BY name")]

    def forget_webhook(self, name: str) -> None:
        """The webhook left the config: its outbox, batch and counts go."""
        with self._write() as cur:
            wid = _webhook_id(cur, name)
            if wid is not None:
                cur.execute("DELETE FROM outbox WHERE webhook = ?", (wid,))
                cur.execute("DELETE FROM batches WHERE webhook = ?", (wid,))
                cur.execute("DELETE FROM webhooks WHERE id = ?", (wid,))

    # --- scale-down: a leaving MTA's events move to a peer ----------------------------------------
    def add(self, events: Sequence[Event], outboxes: Sequence[str] = ()) -> int:
        """Events a leaving peer handed over: each stored once (by event id, so a repeated hand-off
        adds nothing), and put in the outboxes named in ``outboxes`` (they were waiting there on the
        peer). How many were new."""
        if not events:
            return 0
        with self._write() as cur:
            seqs, new = [], 0
            for event in events:
                found = cur.execute("SELECT seq FROM events WHERE json_extract(body, '$.event_id') = ?",
                                    (event.event_id,)).fetchone()
                if found is not None:
                    seqs.append(int(found[0]))
                    continue
                seqs.append(int(cur.execute("INSERT INTO events (ts, type, queue_id, message_id, sender, "
                                            "recipient, credential, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                            encode_row(event)).lastrowid or 0))
                new += 1
            for name in outboxes:
                wid = _ensure_webhook(cur, name)
                added = sum(cur.execute("INSERT OR IGNORE INTO outbox (webhook, seq) VALUES (?, ?)",
                                        (wid, seq)).rowcount for seq in seqs)
                cur.execute("UPDATE webhooks SET pending = pending + ? WHERE id = ?", (added, wid))
                self._trim(cur, wid)
            return new

    def take_pending(self, webhook: str, limit: int) -> list[tuple[int, Event]]:
        """The webhook's oldest pending events (its formed batch's included) with their row numbers,
        to hand them to a peer; they stay here until ``release_pending``."""
        with self._read() as cur:
            wid = _webhook_id(cur, webhook)
            if wid is None:
                return []
            rows = cur.execute(f"{_SELECT} WHERE seq IN (SELECT seq FROM outbox WHERE webhook = ? "  # noqa: S608 (constant text)
                               "ORDER BY seq LIMIT ?) ORDER BY seq", (wid, limit)).fetchall()
        return [(int(r[0]), decode_row(r)) for r in rows]

    def release_pending(self, webhook: str, seqs: Sequence[int]) -> None:
        """A peer holds these now: they leave this outbox. A formed batch that loses events is
        dissolved (its webhook-id was never answered; the peer sends them under its own)."""
        with self._write() as cur:
            wid = _webhook_id(cur, webhook)
            if wid is None or not seqs:
                return
            marks = ",".join("?" * len(seqs))
            batch = cur.execute(f"SELECT DISTINCT batch FROM outbox WHERE webhook = ? AND batch IS NOT NULL "  # noqa: S608
                                f"AND seq IN ({marks})", (wid, *seqs)).fetchall()
            gone = cur.execute(f"DELETE FROM outbox WHERE webhook = ? AND seq IN ({marks})",  # noqa: S608
                               (wid, *seqs)).rowcount
            for (batch_id,) in batch:
                cur.execute("UPDATE outbox SET batch = NULL WHERE batch = ?", (batch_id,))
                cur.execute("DELETE FROM batches WHERE id = ?", (batch_id,))
            cur.execute("UPDATE webhooks SET pending = pending - ? WHERE id = ?", (gone, wid))

    def total_pending(self) -> int:
        """Events waiting for any webhook."""
        with self._read() as cur:
            return int(cur.execute("SELECT coalesce(sum(pending), 0) FROM webhooks").fetchone()[0])

    def _trim(self, cur: sqlite3.Cursor, wid: int) -> None:
        """Past ``max_pending``: drop the oldest — the formed batch first (its events are the oldest, and
        a batch goes whole or not at all), then the oldest not in it."""
        pending = cur.execute("SELECT pending FROM webhooks WHERE id = ?", (wid,)).fetchone()[0]
        excess = pending - self.max_pending
        if excess <= 0:
            return
        dropped = 0
        row = cur.execute("SELECT id FROM batches WHERE webhook = ?", (wid,)).fetchone()
        if row is not None:
            dropped += cur.execute("DELETE FROM outbox WHERE batch = ?", (row[0],)).rowcount
            cur.execute("DELETE FROM batches WHERE id = ?", (row[0],))
        if excess > dropped:
            dropped += cur.execute(
                "DELETE FROM outbox WHERE webhook = ? AND seq IN (SELECT seq FROM outbox WHERE webhook = ? "
                "AND batch IS NULL ORDER BY seq LIMIT ?)", (wid, wid, excess - dropped)).rowcount
        cur.execute("UPDATE webhooks SET pending = pending - ?, dropped = dropped + ? WHERE id = ?",
                    (dropped, dropped, wid))


def _ensure_webhook(cur: sqlite3.Cursor, name: str) -> int:
    cur.execute("INSERT OR IGNORE INTO webhooks (name) VALUES (?)", (name,))
    return int(cur.execute("SELECT id FROM webhooks WHERE name = ?", (name,)).fetchone()[0])


def _webhook_id(cur: sqlite3.Cursor, name: str) -> int | None:
    row = cur.execute("SELECT id FROM webhooks WHERE name = ?", (name,)).fetchone()
    return None if row is None else int(row[0])


def _batch_events(cur: sqlite3.Cursor, batch_id: str) -> tuple[Event, ...]:
    rows = cur.execute(f"{_SELECT} WHERE seq IN (SELECT seq FROM outbox WHERE batch = ?) ORDER BY seq",  # noqa: S608 (constant text)
                       (batch_id,)).fetchall()
    return tuple(decode_row(r) for r in rows)



# --- the writer -----------------------------------------------------------------------------------
class _Flush:
    def __init__(self) -> None:
        self.done = threading.Event()


@dataclass(frozen=True)
class StoreLimits:
    retention: float = DEFAULT_RETENTION  # seconds
    max_events: int = DEFAULT_MAX_EVENTS
    max_pending: int = DEFAULT_MAX_PENDING  # per webhook


@dataclass(frozen=True)
class _Configure:
    webhooks: tuple[WebhookFilter, ...]
    limits: StoreLimits | None = None


_STOP = object()


class EventWriter:
    """Writes one process's events into the store from a thread of its own, so that ``emit`` never
    waits: it queues the event, from any thread or event loop. The thread commits in groups (what
    arrived within ``group_seconds`` of the first, at most ``group_max``) and prunes every
    ``prune_every`` seconds.

    Events never cost mail: when the store cannot be written (disk full, file gone) the group is
    counted in ``failed`` and its events still get their log line; when more than ``queue_max`` wait
    (the store far behind), new ones are counted in ``overflowed``, logged and not stored. ``log_events``:
    one JSON log line per event (``mta_relay.events``), written by the thread before the insert.
    ``on_commit`` is called from the thread after each commit (the webhook sender's nudge)."""

    def __init__(self, path: Path, *, retention: float = DEFAULT_RETENTION,
                 max_events: int = DEFAULT_MAX_EVENTS, max_pending: int = DEFAULT_MAX_PENDING,
                 log_events: bool = True, group_seconds: float = 0.05,
                 group_max: int = 500, queue_max: int = 100_000, prune_every: float | None = 60.0,
                 on_commit: Callable[[], None] | None = None) -> None:
        self.path, self.log_events, self.on_commit = path, log_events, on_commit
        self.retention, self.max_events, self.max_pending = retention, max_events, max_pending
        self.group_seconds, self.group_max, self.queue_max, self.prune_every = (
            group_seconds, group_max, queue_max, prune_every)
        self.written = 0  # events committed
        self.failed = 0  # events the store could not take
        self.overflowed = 0  # events not queued: too many waiting
        self.pruned = 0
        self._count_lock = threading.Lock()
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._urgent = threading.Event()  # a flush, configure or stop is queued: commit without waiting
        self._webhooks: tuple[WebhookFilter, ...] = ()
        self._store: EventStore | None = None
        self._last_error_log = float("-inf")
        self._thread = threading.Thread(target=self._run, name="event-writer", daemon=True)
        self._thread.start()

    def emit(self, event: Event) -> None:
        if self._queue.qsize() >= self.queue_max:
            with self._count_lock:
                self.overflowed += 1
            self._log_event(event)
            self._error_now("events not stored: the writer is behind", "event_store_overflow", None)
            return
        self._queue.put(event)

    def configure(self, webhooks: Sequence[WebhookFilter], limits: StoreLimits | None = None) -> None:
        """The webhooks whose outboxes the next events go to; ones no longer named are forgotten.
        ``limits``: new bounds (retention, max events, max pending), in force from the next write."""
        self._queue.put(_Configure(tuple(webhooks), limits))
        self._urgent.set()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything emitted before is committed (or failed); False on timeout."""
        marker = _Flush()
        self._queue.put(marker)
        self._urgent.set()
        return marker.done.wait(timeout) if self._thread.is_alive() else False

    def close(self, timeout: float | None = 10.0) -> None:
        """Commit what is queued, then stop the thread and close the database."""
        self._queue.put(_STOP)
        self._urgent.set()
        self._thread.join(timeout)

    # --- the thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        next_prune = time.monotonic() + (self.prune_every or 0)
        stopping = False
        while not stopping:
            wait = None if self.prune_every is None else max(0.0, next_prune - time.monotonic())
            try:
                item = self._queue.get(timeout=wait)
            except queue.Empty:
                item = None
            group: list[Event] = []
            flushes: list[_Flush] = []
            deadline = time.monotonic() + self.group_seconds
            while item is not None:
                if item is _STOP:
                    stopping = True
                    break
                if isinstance(item, Event):
                    group.append(item)
                elif isinstance(item, _Flush):
                    flushes.append(item)
                    break  # commit now: someone waits
                elif isinstance(item, _Configure):
                    self._commit(group)  # events emitted before go to the outboxes of the time
                    group = []
                    self._reconfigure(item.webhooks, item.limits)
                if len(group) >= self.group_max:
                    break
                item = self._next(deadline)
            self._commit(group)
            for marker in flushes:
                marker.done.set()
            if self.prune_every is not None and time.monotonic() >= next_prune:
                next_prune = time.monotonic() + self.prune_every
                self._prune()
        if self._store is not None:
            self._store.close()

    def _next(self, deadline: float) -> object | None:
        """The group's next item; None once its time is up. Between items the thread sleeps until the
        deadline, woken early only by a flush, a configure or a stop (``_urgent``), never by ``emit``:
        a thread woken at every event takes the GIL from the emitting event loop at every event."""
        while True:
            try:
                return self._queue.get_nowait()
            except queue.Empty:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._urgent.wait(remaining)
            self._urgent.clear()  # then the queue is looked at again: a marker put before set() is there

    def _open(self) -> EventStore:
        if self._store is None:
            self._store = EventStore(self.path, retention=self.retention, max_events=self.max_events,
                                     max_pending=self.max_pending)
        return self._store

    def _commit(self, group: list[Event]) -> None:
        if not group:
            return
        if self.log_events:
            for event in group:
                self._log_event(event)
        try:
            self._open().insert(group, self._webhooks)
        except (sqlite3.Error, OSError, StoreError) as error:
            self.failed += len(group)
            if not self.log_events:  # the log is then the only record of them
                for event in group:
                    self._log_event(event)
            self._drop_connection()
            self._error_now("events not stored", "event_store_write_failed", error)
            return
        self.written += len(group)
        if self.on_commit is not None:
            try:
                self.on_commit()
            except Exception:  # a nudge that fails must not stop the writer
                log.exception("event commit callback failed")

    def _reconfigure(self, webhooks: tuple[WebhookFilter, ...], limits: StoreLimits | None) -> None:
        if limits is not None and (limits.retention, limits.max_events, limits.max_pending) != (
                self.retention, self.max_events, self.max_pending):
            self.retention, self.max_events, self.max_pending = (limits.retention, limits.max_events,
                                                                 limits.max_pending)
            self._drop_connection()  # the next write opens the store with the new bounds
        removed = {w.name for w in self._webhooks} - {w.name for w in webhooks}
        self._webhooks = webhooks
        for name in sorted(removed):
            try:
                self._open().forget_webhook(name)
            except (sqlite3.Error, OSError, StoreError) as error:
                self._drop_connection()
                self._error_now("webhook outbox not forgotten", "event_store_write_failed", error)

    def _prune(self) -> None:
        try:
            self.pruned += self._open().prune()
        except (sqlite3.Error, OSError, StoreError) as error:
            self._drop_connection()
            self._error_now("event store not pruned", "event_store_prune_failed", error)

    def _drop_connection(self) -> None:
        """After a failure the next group opens the database afresh (the file may have been replaced)."""
        if self._store is not None:
            with suppress(sqlite3.Error):
                self._store.close()
            self._store = None

    def _log_event(self, event: Event) -> None:
        log.info("mail event", extra={"fields": {"event": "mail_event", **event.to_json()}})

    def _error_now(self, message: str, kind: str, error: BaseException | None) -> None:
        """At most one error line per ERROR_LOG_SECONDS: a full disk fails every group."""
        now = time.monotonic()
        if now - self._last_error_log < ERROR_LOG_SECONDS:
            return
        self._last_error_log = now
        # sqlite3's texts name the failure ("database or disk is full"), never a row's content
        detail = str(error) if isinstance(error, sqlite3.Error) else None
        log.error(message, extra={"fields": {
            "event": kind, "error": type(error).__name__ if error else None, "detail": detail,
            "failed": self.failed, "overflowed": self.overflowed}})
