"""The durable spool: where an accepted message lives until delivery is done with it.

Shared contract between the front door (writes, then answers 250) and delivery (lists, reads, records
per-recipient outcomes, removes). Layout under the spool root::

    tmp/<qid>.msg        being written (never read by delivery)
    active/<qid>.msg     complete, durable entries: immutable once there
    active/<qid>.out     per-recipient outcomes, JSON lines appended by delivery (last line per rcpt wins)
    quarantine/          entries found half-written or corrupt by ``recover``

Entry file format (version 1)::

    MTASPOOL 1 <header length> <message length>\\n
    <header: JSON object, the Envelope fields>\\n
    <message: the exact bytes received, CRLF line ends, dot-stuffing removed>
    \\nSHA256 <hex of header + message>\\n

Durability (``put``): write tmp file, fsync it, rename into active/, fsync active/ — then, and only then,
the caller may reply 250. The directory fsync is group-committed: concurrent writers share one directory
fsync that started after their rename, so a busy relay pays a little over one fsync per message
(``fsyncs`` / ``entries_written`` counts it). A torn or corrupt entry fails its length or checksum test.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

FORMAT_VERSION = 1
_MAGIC = b"MTASPOOL"
_QID = re.compile(r"^[0-9a-f]{26}$")
Status = Literal["delivered", "failed", "deferred"]
FINAL: frozenset[str] = frozenset({"delivered", "failed"})


class SpoolError(Exception):
    """The spool cannot take the message (disk full, read-only, gone): answer 452 4.3.1, never 250."""


class CorruptEntry(Exception):
    """An entry that fails its format, length or checksum test."""


@dataclass(frozen=True)
class Envelope:
    queue_id: str
    mail_from: str  # "" for the null sender
    rcpts: tuple[str, ...]
    credential: str  # username of the authenticated SmtpCredential
    client_ip: str
    received_at: float  # Unix time
    source: Literal["smtp", "http"]
    smtputf8: bool
    size: int


@dataclass(frozen=True)
class SpoolEntry:
    envelope: Envelope
    message: bytes


@dataclass(frozen=True)
class Outcome:
    rcpt: str
    status: Status
    detail: str  # the remote reply or the reason; never message content
    at: float


@dataclass(frozen=True)
class RecoveryReport:
    entries: tuple[str, ...]  # queue ids found complete in active/
    quarantined: tuple[str, ...]  # file names moved to quarantine/


def new_queue_id() -> str:
    """Time-ordered and unique across MTAs: 16 hex digits of nanoseconds, 10 random."""
    return f"{time.time_ns():016x}{secrets.token_hex(5)}"


def encode_entry(envelope: Envelope, message: bytes) -> bytes:
    header = json.dumps(asdict(envelope), separators=(",", ":")).encode()
    digest = hashlib.sha256(header + message).hexdigest().encode()
    first = b"%s %d %d %d\n" % (_MAGIC, FORMAT_VERSION, len(header), len(message))
    return b"".join((first, header, b"\n", message, b"\nSHA256 ", digest, b"\n"))


def decode_entry(data: bytes) -> SpoolEntry:
    first, sep, rest = data.partition(b"\n")
    fields = first.split(b" ")
    if not sep or len(fields) != 4 or fields[0] != _MAGIC or fields[1] != b"%d" % FORMAT_VERSION:
        raise CorruptEntry("bad first line")
    try:
        header_len, message_len = int(fields[2]), int(fields[3])
    except ValueError:
        raise CorruptEntry("bad lengths") from None
    trailer = b"\nSHA256 " + b"0" * 64 + b"\n"
    if len(rest) != header_len + 1 + message_len + len(trailer):
        raise CorruptEntry("truncated or overlong")
    header, message = rest[:header_len], rest[header_len + 1: header_len + 1 + message_len]
    digest = rest[header_len + 1 + message_len + len(b"\nSHA256 "): -1]
    if hashlib.sha256(header + message).hexdigest().encode() != digest:
        raise CorruptEntry("checksum mismatch")
    try:
        raw = json.loads(header)
        envelope = Envelope(**{**raw, "rcpts": tuple(raw["rcpts"])})
    except (ValueError, TypeError, KeyError):
        raise CorruptEntry("bad header") from None
    return SpoolEntry(envelope, message)


class _DirSyncer:
    """Group commit for directory fsyncs: every waiter gets an fsync that began after it asked."""

    def __init__(self, spool: Spool) -> None:
        self._spool = spool
        self._next: asyncio.Future[None] | None = None
        self._running = False

    async def sync(self) -> None:
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        waiter = self._next
        if not self._running:
            self._running = True
            asyncio.get_running_loop().create_task(self._run())
        await waiter

    async def _run(self) -> None:
        try:
            while self._next is not None:
                waiter, self._next = self._next, None
                try:
                    await asyncio.to_thread(self._spool.fsync_dir, self._spool.active)
                except OSError as error:
                    waiter.set_exception(SpoolError(f"spool directory sync failed: {error.strerror}"))
                else:
                    waiter.set_result(None)
        finally:
            self._running = False


class Spool:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp, self.active, self.quarantine_dir = root / "tmp", root / "active", root / "quarantine"
        self.fsyncs = 0  # counted for the fsyncs-per-message figure (metrics, bench)
        self.entries_written = 0
        self._count_lock = threading.Lock()  # fsyncs happen in worker threads
        self._dir_syncer = _DirSyncer(self)

    def ensure_dirs(self) -> None:
        for directory in (self.tmp, self.active, self.quarantine_dir):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    # --- writing (front door) ---------------------------------------------------------------------
    async def put(self, *, queue_id: str | None = None, mail_from: str, rcpts: list[str] | tuple[str, ...],
                  credential: str, client_ip: str, source: Literal["smtp", "http"], smtputf8: bool,
                  message: bytes) -> Envelope:
        """Make the message durable; return its envelope. Raises SpoolError: then never answer 250."""
        envelope = Envelope(queue_id or new_queue_id(), mail_from, tuple(rcpts), credential, client_ip,
                            time.time(), source, smtputf8, len(message))
        try:
            await asyncio.to_thread(self._write_entry, envelope, message)
        except OSError as error:
            raise SpoolError(f"spool write failed: {error.strerror}") from None
        await self._dir_syncer.sync()
        self.entries_written += 1
        return envelope

    def _write_entry(self, envelope: Envelope, message: bytes) -> None:
        name = f"{envelope.queue_id}.msg"
        tmp = self.tmp / name
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb", closefd=False) as out:
                out.write(encode_entry(envelope, message))
            self._fsync(fd)
        except OSError:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.rename(tmp, self.active / name)

    def fsync_dir(self, directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self._fsync(fd)
        finally:
            os.close(fd)

    def _fsync(self, fd: int) -> None:
        os.fsync(fd)
        with self._count_lock:
            self.fsyncs += 1

    def probe(self, min_free_bytes: int) -> bool:
        """Readiness: the spool takes files and has room for a full-size message (no fsync spent)."""
        try:
            probe = self.tmp / f".probe-{secrets.token_hex(4)}"
            probe.write_bytes(b"x")
            probe.unlink()
            st = os.statvfs(self.tmp)
        except OSError:
            return False
        return st.f_bavail * st.f_frsize >= min_free_bytes

    # --- reading and bookkeeping (delivery) ------------------------------------------------------
    def queue_ids(self) -> list[str]:
        """Queue ids of complete entries, oldest first."""
        return sorted(n[:-4] for n in os.listdir(self.active) if n.endswith(".msg") and _QID.match(n[:-4]))

    def depth(self) -> int:
        return sum(1 for n in os.listdir(self.active) if n.endswith(".msg"))

    def read(self, queue_id: str) -> SpoolEntry:
        """The entry, checked; CorruptEntry if it fails its checks (then ``quarantine`` it)."""
        return decode_entry(self._path(queue_id, ".msg").read_bytes())

    def record_outcome(self, queue_id: str, rcpt: str, status: Status, detail: str) -> None:
        """Append one recipient's outcome durably (fsync'd) before delivery acts on it."""
        line = json.dumps(asdict(Outcome(rcpt, status, detail, time.time())), separators=(",", ":"))
        fd = os.open(self._path(queue_id, ".out"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line.encode() + b"\n")
            self._fsync(fd)
        finally:
            os.close(fd)

    def outcomes(self, queue_id: str) -> dict[str, Outcome]:
        """Latest outcome per recipient; a torn last line (crash mid-append) is ignored."""
        try:
            data = self._path(queue_id, ".out").read_bytes()
        except FileNotFoundError:
            return {}
        result: dict[str, Outcome] = {}
        for line in data.splitlines():
            try:
                outcome = Outcome(**json.loads(line))
            except (ValueError, TypeError):
                continue
            result[outcome.rcpt] = outcome
        return result

    def pending_rcpts(self, entry: SpoolEntry) -> list[str]:
        """Recipients without a final (delivered/failed) outcome yet."""
        done = {r for r, o in self.outcomes(entry.envelope.queue_id).items() if o.status in FINAL}
        return [r for r in entry.envelope.rcpts if r not in done]

    def remove(self, queue_id: str) -> None:
        """Delivery is done with the entry (all recipients final). The message goes first, so a crash
        in between leaves only an orphan outcome file, which ``recover`` removes."""
        self._path(queue_id, ".msg").unlink(missing_ok=True)
        self._path(queue_id, ".out").unlink(missing_ok=True)
        self.fsync_dir(self.active)

    def quarantine(self, queue_id: str) -> None:
        for suffix in (".msg", ".out"):
            path = self._path(queue_id, suffix)
            if path.exists():
                os.rename(path, self.quarantine_dir / path.name)
        self.fsync_dir(self.active)

    def recover(self) -> RecoveryReport:
        """At start-up, before serving: quarantine half-written (tmp/) and corrupt entries, drop orphan
        outcome files; return the complete entries for delivery to resume."""
        self.ensure_dirs()
        quarantined: list[str] = []
        for name in sorted(os.listdir(self.tmp)):
            os.rename(self.tmp / name, self.quarantine_dir / name)
            quarantined.append(name)
        good: list[str] = []
        for queue_id in self.queue_ids():
            try:
                self.read(queue_id)
            except CorruptEntry:
                self.quarantine(queue_id)
                quarantined.append(f"{queue_id}.msg")
            else:
                good.append(queue_id)
        for name in os.listdir(self.active):
            if name.endswith(".out") and name[:-4] not in good:
                (self.active / name).unlink()
        self.fsync_dir(self.active)
        self.fsync_dir(self.quarantine_dir)
        return RecoveryReport(tuple(good), tuple(quarantined))

    def _path(self, queue_id: str, suffix: str) -> Path:
        if not _QID.match(queue_id):
            raise ValueError("not a queue id")
        return self.active / f"{queue_id}{suffix}"
