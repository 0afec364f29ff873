"""The suppression list of one MTA: SQLite on its spool volume (``<queue.path>/state/suppressions.db``),
a full copy of the Cluster's list on every MTA (``exchange`` keeps the copies together).

One row per address, lowercased: why (``reason``: a bounce classification such as ``InvalidRecipient``,
or ``Manual``), how it came (``source``), who added it (a credential's username for a bounce, the person
``kubectl mta suppressions`` reports), the reply that caused it, when, and when it expires. A removal is a
row too (a tombstone), so that it reaches the other MTAs; tombstones are purged after ``TOMBSTONE_DAYS``.

The copies merge by last writer wins on ``updated`` (a removal wins a tie). Every row this MTA changes,
whatever the origin, gets the next change number ``seq``, and a peer asks for the rows changed after the
last number it saw; a row that loses the merge changes nothing and gets no number, so a change
travels once round the mesh and stops. ``epoch`` names the database file: a peer that asks with another
epoch (the volume was replaced) gets everything again.

A lookup is one primary-key read on the relay's event loop; memory is SQLite's page cache, not the list
(a million entries: ``bench/results/suppressions.md``).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

STATE_DIR = "state"
STORE_FILE = "suppressions.db"
TOMBSTONE_DAYS = 7
MAX_ADDRESS = 320  # RFC 5321: 64 + 1 + 255
MAX_DETAIL = 300
MAX_BY = 253
Source = Literal["Bounce", "Manual", "Import"]
SOURCES: tuple[str, ...] = ("Bounce", "Manual", "Import")
MANUAL_REASON = "Manual"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS suppressions (
    address TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    source TEXT NOT NULL,
    added_by TEXT NOT NULL,
    detail TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL,
    updated REAL NOT NULL,
    removed INTEGER NOT NULL,
    seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS suppressions_seq ON suppressions (seq);
"""
_COLUMNS = "address, reason, source, added_by, detail, created, expires, updated, removed"
# The statements, built once from constants (no input is ever formatted into SQL).
_BY_ADDRESS = f"SELECT {_COLUMNS} FROM suppressions WHERE address = ?"  # noqa: S608
_CHANGES = f"SELECT seq, {_COLUMNS} FROM suppressions WHERE seq > ? ORDER BY seq LIMIT ?"  # noqa: S608
_IN_FORCE = (f"SELECT {_COLUMNS} FROM suppressions WHERE removed = 0 "  # noqa: S608
             "AND (expires IS NULL OR expires > ?) AND address > ?")
_LAST_SEQ = "SELECT coalesce(max(seq), 0) FROM suppressions"
# Last writer wins on ``updated``; at a tie a removal wins. A row that loses changes nothing (no new seq).
_MERGE = (f"INSERT INTO suppressions ({_COLUMNS}, seq) VALUES (?,?,?,?,?,?,?,?,?,?) "  # noqa: S608
          "ON CONFLICT (address) DO UPDATE SET reason = excluded.reason, source = excluded.source, "
          "added_by = excluded.added_by, detail = excluded.detail, created = excluded.created, "
          "expires = excluded.expires, updated = excluded.updated, removed = excluded.removed, "
          "seq = excluded.seq WHERE (excluded.updated, excluded.removed) > "
          "(suppressions.updated, suppressions.removed)")


class BadEntry(ValueError):
    """An entry the list cannot take; the message names the field."""


@dataclass(frozen=True)
class Entry:
    address: str
    reason: str
    source: str
    added_by: str
    detail: str
    created: float
    expires: float | None
    updated: float
    removed: bool = False

    def active(self, now: float) -> bool:
        return not self.removed and (self.expires is None or self.expires > now)

    def to_json(self) -> dict[str, object]:
        return {"address": self.address, "reason": self.reason, "source": self.source,
                "addedBy": self.added_by, "detail": self.detail, "created": self.created,
                "expires": self.expires}


def normalize(address: str) -> str:
    """The key of an address: lowercased, angle brackets and spaces off. BadEntry when it is no address."""
    key = address.strip().strip("<>").strip().lower()
    if not key or len(key) > MAX_ADDRESS or "@" not in key or any(c.isspace() for c in key) \
            or key.startswith("@") or key.endswith("@"):
        raise BadEntry(f"address: {address[:64]!r} is not an address such as user@example.com")
    return key


def entry(address: str, *, reason: str, source: str, added_by: str, detail: str = "",
          now: float | None = None, expires: float | None = None) -> Entry:
    """A new entry, checked: BadEntry names the field at fault."""
    if source not in SOURCES:
        raise BadEntry(f"source: one of {list(SOURCES)}")
    if not reason or len(reason) > 64 or not reason.isascii() or not reason.replace("-", "").isalnum():
        raise BadEntry("reason: 1 to 64 letters or digits, such as InvalidRecipient or Manual")
    now = time.time() if now is None else now
    if expires is not None and expires <= now:
        raise BadEntry("expires: in the past")
    return Entry(normalize(address), reason, source, added_by[:MAX_BY], detail[:MAX_DETAIL], now, expires,
                 now)


def tombstone(address: str, *, added_by: str, now: float | None = None) -> Entry:
    now = time.time() if now is None else now
    return Entry(normalize(address), MANUAL_REASON, "Manual", added_by[:MAX_BY], "", now, None, now, True)


def _row(e: Entry) -> tuple[object, ...]:
    # By hand: dataclasses.astuple deep-copies field by field, most of a merge's cost.
    return (e.address, e.reason, e.source, e.added_by, e.detail, e.created, e.expires, e.updated,
            int(e.removed))


def _entry(row: tuple[Any, ...]) -> Entry:
    """``row``: as sqlite3 returns it (untyped; the columns are the table's, ``_row``'s order)."""
    a, reason, source, by, detail, created, expires, updated, removed = row
    return Entry(str(a), str(reason), str(source), str(by), str(detail), float(created),
                 None if expires is None else float(expires), float(updated), bool(removed))


class SuppressionStore:
    """One connection, usable from any thread (a lock serialises it): the front door reads on its event
    loop and writes from worker threads; the delivery process has its own store on the same file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # the state directory, as state_files
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints, never corrupt
            self._db.executescript(_SCHEMA)
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('epoch', ?)", (os.urandom(8).hex(),))
            self.epoch = str(self._db.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()[0])
        # Lookups have a connection of their own: in WAL a reader never waits for a writer, so an import
        # committing in batches on a worker thread does not hold up RCPT on the event loop.
        self._reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._reader_lock = threading.Lock()

    def close(self) -> None:
        with self._reader_lock:
            self._reader.close()
        with self._lock:
            self._db.close()

    # reads

    def lookup(self, address: str, now: float | None = None) -> Entry | None:
        """The address's entry while it is in force (not removed, not expired), else None."""
        try:
            key = normalize(address)
        except BadEntry:
            return None
        with self._reader_lock:
            row = self._reader.execute(_BY_ADDRESS, (key,)).fetchone()
        if row is None:
            return None
        found = _entry(row)
        return found if found.active(time.time() if now is None else now) else None

    def seq(self) -> int:
        with self._lock:
            return int(self._db.execute(_LAST_SEQ).fetchone()[0])

    def changes(self, since: int, limit: int) -> tuple[list[tuple[int, Entry]], bool]:
        """Rows changed after change number ``since``, oldest first, at most ``limit``; and whether more
        are left."""
        rows, more = self.change_rows(since, limit)
        return [(int(r[0]), _entry(r[1:])) for r in rows], more

    def change_rows(self, since: int, limit: int) -> tuple[list[tuple[Any, ...]], bool]:
        """``changes`` as the database's tuples (seq first, then the columns): what the exchange sends."""
        with self._lock:
            rows = self._db.execute(_CHANGES, (since, limit + 1)).fetchall()
        return rows[:limit], len(rows) > limit

    def query(self, *, prefix: str = "", reason: str = "", after: str = "", limit: int = 1000,
              now: float | None = None) -> list[Entry]:
        """Entries in force, by address from ``after`` (exclusive): one page of a listing or an export."""
        now = time.time() if now is None else now
        sql = _IN_FORCE
        params: list[object] = [now, after]
        if prefix:
            sql += " AND address >= ? AND address < ?"
            params += [prefix, prefix + "\U0010ffff"]
        if reason:
            sql += " AND reason = ?"
            params.append(reason)
        sql += " ORDER BY address LIMIT ?"
        params.append(limit)
        with self._lock:
            return [_entry(r) for r in self._db.execute(sql, params).fetchall()]

    def count(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM suppressions WHERE removed = 0 AND "
                                        "(expires IS NULL OR expires > ?)", (now,)).fetchone()[0])

    # writes

    def put(self, entries: Iterable[Entry], batch: int = 10_000) -> int:
        """Merge entries, last writer wins (a removal wins a tie); returns how many changed a row. Large
        inputs commit every ``batch`` rows, so readers and the other process never wait long."""
        changed = 0
        for chunk in _chunks(entries, batch):
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    before = self._db.total_changes
                    seq = int(self._db.execute(_LAST_SEQ).fetchone()[0])
                    # In address order: neighbouring rows share B-tree pages, fewer pages touched.
                    chunk.sort(key=lambda e: e.address)
                    self._db.executemany(_MERGE, ((*_row(e), seq + i + 1) for i, e in enumerate(chunk)))
                    changed += self._db.total_changes - before
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
        return changed

    def purge(self, now: float | None = None) -> int:
        """Forget expired entries and old tombstones (each MTA expires by the same clock: no change
        number, nothing to exchange)."""
        now = time.time() if now is None else now
        with self._lock:
            cursor = self._db.execute(
                "DELETE FROM suppressions WHERE (removed = 0 AND expires IS NOT NULL AND expires <= ?) "
                "OR (removed = 1 AND updated < ?)", (now, now - TOMBSTONE_DAYS * 86400))
            return cursor.rowcount


def _chunks(entries: Iterable[Entry], size: int) -> Iterator[list[Entry]]:
    chunk: list[Entry] = []
    for e in entries:
        chunk.append(e)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def store_path(queue_path: Path) -> Path:
    return queue_path / STATE_DIR / STORE_FILE
