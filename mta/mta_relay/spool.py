"""The durable spool: where an accepted message lives until delivery is done with it.

Shared contract between the front door (writes, then answers 250) and delivery (lists, reads, records
per-recipient outcomes, removes). Layout under the spool root::

    slots/<8 digits>     slot files, each empty (free) or holding exactly one entry
    outcomes/<qid>.out   per-recipient outcomes and retry records, JSON lines appended by delivery
    quarantine/          entries found torn or corrupt
    state/               small state files of the two processes (``state_files``: rate window, quotas)
    events/              the delivery events' store and webhook outboxes (``events.store``, SQLite)

Entry format (version 1), written at offset 0 of an empty slot::

    MTASPOOL 1 <header length> <message length>\\n
    <header: JSON object, the Envelope fields>\\n
    <message: the exact bytes received, CRLF line ends, dot-stuffing removed>
    \\nSHA256 <hex of header + message>\\n

Durability with one data sync per message (``put``): slots are created ahead of need, in batches, and
made durable then (each file and the directory fsync'd) — so a slot's directory entry is on disk before
any message is written into it. Accepting a message is: take a free (empty) slot, write the entry,
``fdatasync`` the slot — then, and only then, the caller may reply 250. No create, rename or directory
sync on the hot path. A torn write fails the entry's length or checksum test and is quarantined by
``recover``; a message was only acknowledged after its sync completed, so a torn entry is never one.

An outcomes file holds two kinds of JSON line, each appended and fsync'd; a torn last line is ignored::

    {"rcpt": "<address>", "status": "delivered|failed|deferred", "detail": "<reply>", "at": <Unix time>}
    {"attempts": <failed attempts so far>, "next_at": <Unix time of the next attempt>, "at": <Unix time>,
     "replies": {"<address>": "<the reply that deferred it>", ...}}

The last line per recipient is that recipient's outcome; the last retry line is the entry's retry state
(``retry_state``), written when an attempt is deferred (``record_retry``) so that a restarted MTA — or
the peer an entry is handed to — resumes the backoff where it was. Only deferrals write one: a message
delivered at its first attempt never gets an outcomes file. ``replies`` (optional: absent when none, and
in lines written before it existed) names the recipients deferred by that attempt only; a recipient's last
deferral reply is the one in the latest retry line naming it, dated by that line's ``at``.

Each serving process (``workers``) takes slots from a range of its own, ``worker * SLOT_RANGE`` on, so no
lock between processes is on the hot path; the first process's range starts at 0, as every spool written
before there were several. A slot is made free again only by the process whose range holds it.

Removal truncates the slot to zero (free again) without a sync: the entry is done, so losing the
truncation to a machine crash only brings it back as a duplicate (see docs/delivery.md). A process crash
loses nothing the kernel was given. Beyond ``MAX_FREE`` free slots, removal unlinks the file instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Literal

from mta_relay.io_threads import IoThreads

FORMAT_VERSION = 1
_MAGIC = b"MTASPOOL"
_QID = re.compile(r"^[0-9a-f]{26}$")
_SLOT = re.compile(r"^[0-9]{8}$")
_QID_IN_HEADER = re.compile(rb'"queue_id":"([0-9a-f]{26})"')
SLOT_BATCH = 64  # slots created (and synced) at a time: one directory sync per 64 new slots
MAX_FREE = 1024  # free slots kept for reuse after a backlog drains
SLOT_RANGE = 10_000_000  # slot numbers per serving process: 8 digits hold 10 ranges
IO_THREADS = 16  # concurrent writes and syncs (the default executor's few threads would cap them)
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
    message_id: str = ""  # the message's Message-ID field (with its <>), for events; "" in older entries


_ENVELOPE_FIELDS = frozenset(f.name for f in dataclass_fields(Envelope)) - {"rcpts"}


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
class RetryState:
    """Where an entry's backoff stands: ``attempts`` failed so far, the next one due at ``next_at``;
    ``replies``: recipient → (the reply that deferred it last, when it was recorded)."""

    attempts: int
    next_at: float  # Unix time
    at: float = 0.0  # when it was recorded (Unix time)
    replies: Mapping[str, tuple[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class RecoveryReport:
    entries: tuple[str, ...]  # queue ids found complete
    quarantined: tuple[str, ...]  # file names moved to quarantine/


def slot_files(slots: Path) -> list[Path]:
    """The slot files of a spool's ``slots`` directory in slot order: readiness probes and other
    transient names there are not slots."""
    return [slots / name for name in sorted(os.listdir(slots)) if _SLOT.match(name)]


def new_queue_id() -> str:
    """Time-ordered and unique across MTAs: 16 hex digits of nanoseconds, 10 random."""
    return f"{time.time_ns():016x}{secrets.token_hex(5)}"


def encode_entry(envelope: Envelope, message: bytes) -> bytes:
    # the instance dict, not asdict(): asdict deep-copies field by field, ~10x the cost here
    header = json.dumps(vars(envelope), separators=(",", ":")).encode()
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
    return SpoolEntry(_envelope(header), message)


def _envelope(header: bytes) -> Envelope:
    try:
        raw = json.loads(header)
        # Fields a later release may add are ignored, so a downgrade or a hand-off to an older peer keeps
        # the entry (it loses only what it does not know).
        return Envelope(**{k: v for k, v in raw.items() if k in _ENVELOPE_FIELDS}, rcpts=tuple(raw["rcpts"]))
    except (ValueError, TypeError, KeyError):
        raise CorruptEntry("bad header") from None


class Spool:
    """Call ``recover()`` before anything else: it creates the directories and learns what is there."""

    def __init__(self, root: Path, worker: int = 0) -> None:
        """``worker``: the serving process whose range of slots this one takes from (0: the first)."""
        self.root = root
        self.worker = worker
        self._base = worker * SLOT_RANGE
        self.slots, self.outcomes_dir = root / "slots", root / "outcomes"
        self._slots_prefix = os.path.join(self.slots, "")
        self.quarantine_dir = root / "quarantine"
        self.fsyncs = 0  # counted for the fsyncs-per-message figure (metrics, bench)
        self.entries_written = 0
        self._lock = threading.Lock()  # the maps below change in worker threads and on the loop
        self._grow_lock = threading.Lock()
        self._entries: dict[str, int] = {}  # queue id → slot
        self._free: list[int] = []
        self._free_set: set[int] = set()  # the same slots: a slot made free twice would hold two entries
        self._next_slot = self._base
        # A slot of another process's range released here (delivery tells the first process): its owner
        # gets it back through this hook; without one, it is left alone (the owner finds it at its start).
        self.on_foreign_release: Callable[[int], None] | None = None
        self._with_outcomes: set[str] = set()  # queue ids with an outcomes file
        self._io = IoThreads(IO_THREADS, "spool")

    def ensure_dirs(self) -> None:
        for directory in (self.slots, self.outcomes_dir, self.quarantine_dir):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    # --- writing (front door) ---------------------------------------------------------------------
    async def put(self, *, queue_id: str | None = None, mail_from: str, rcpts: list[str] | tuple[str, ...],
                  credential: str, client_ip: str, source: Literal["smtp", "http"], smtputf8: bool,
                  message: bytes, message_id: str = "") -> Envelope:
        """Make the message durable; return its envelope. Raises SpoolError: then never answer 250."""
        envelope = Envelope(queue_id or new_queue_id(), mail_from, tuple(rcpts), credential, client_ip,
                            time.time(), source, smtputf8, len(message), message_id)
        await self.put_entry(envelope, message)
        return envelope

    async def put_entry(self, envelope: Envelope, message: bytes) -> None:
        """Make an entry durable as it is, queue id and acceptance time kept: one a peer MTA handed over
        (see ``handoff``). Raises SpoolError: then never answer that it was taken."""
        try:
            slot = await self._io.run(self._store, envelope, message)
        except OSError as error:
            raise SpoolError(f"spool write failed: {error.strerror}") from None
        with self._lock:
            self._entries[envelope.queue_id] = slot
        self.entries_written += 1

    def _store(self, envelope: Envelope, message: bytes) -> int:
        data = encode_entry(envelope, message)
        slot = self._take_slot()
        try:
            fd = os.open(self._slot_file(slot), os.O_WRONLY)
        except OSError:
            self._make_free([slot])  # untouched
            raise
        try:
            written = 0
            while written < len(data):
                written += os.pwrite(fd, memoryview(data)[written:], written)
            os.fdatasync(fd)  # the slot's size changes too: fdatasync syncs what reading it back needs
            self._count_sync()
        except OSError:
            self._free_after_failure(fd, slot)
            raise
        finally:
            os.close(fd)
        return slot

    def _free_after_failure(self, fd: int, slot: int) -> None:
        try:
            os.ftruncate(fd, 0)
        except OSError:
            return  # left out of the free list; recover() sorts it out at the next start
        self._make_free([slot])

    def _take_slot(self) -> int:
        while True:
            with self._lock:
                if self._free:
                    slot = self._free.pop()
                    self._free_set.discard(slot)
                    return slot
            with self._grow_lock:
                if not self._free:
                    self._grow()

    def _grow(self) -> None:
        """Create a batch of empty slots and make them durable before any is used."""
        first = self._next_slot
        for slot in range(first, first + SLOT_BATCH):
            self._next_slot = slot + 1  # past it even if this fails: a name is never tried twice
            fd = os.open(self._slot_path(slot), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                self._fsync(fd)
            finally:
                os.close(fd)
        self.fsync_dir(self.slots)
        self._make_free(range(first + SLOT_BATCH - 1, first - 1, -1))  # lowest numbers first

    def fsync_dir(self, directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self._fsync(fd)
        finally:
            os.close(fd)

    def _make_free(self, slots: Iterable[int]) -> None:
        with self._lock:
            for slot in slots:
                if slot not in self._free_set:
                    self._free_set.add(slot)
                    self._free.append(slot)

    def owns(self, slot: int) -> bool:
        """The slot is in this process's range: only this process makes it free again."""
        return self._base <= slot < self._base + SLOT_RANGE

    def _fsync(self, fd: int) -> None:
        os.fsync(fd)
        self._count_sync()

    def _count_sync(self) -> None:
        with self._lock:
            self.fsyncs += 1

    def probe(self, min_free_bytes: int) -> bool:
        """Readiness: the spool takes files and has room for a full-size message (no fsync spent)."""
        try:
            probe = self.slots / f".probe-{secrets.token_hex(4)}"
            probe.write_bytes(b"x")
            probe.unlink()
            st = os.statvfs(self.slots)
        except OSError:
            return False
        return st.f_bavail * st.f_frsize >= min_free_bytes

    def filesystem_bytes(self) -> tuple[int, int]:
        """(bytes free for the relay, filesystem size) of the spool's volume; (0, 0) when unreadable."""
        try:
            st = os.statvfs(self.slots)
        except OSError:
            return 0, 0
        return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize

    # --- reading and bookkeeping (delivery) ------------------------------------------------------
    def queue_ids(self) -> list[str]:
        """Queue ids of complete entries, oldest first."""
        with self._lock:
            return sorted(self._entries)

    def depth(self) -> int:
        return len(self._entries)

    def path(self, queue_id: str) -> Path:
        """The slot file holding the entry (FileNotFoundError if there is none)."""
        return Path(self._entry_file(queue_id))

    def _entry_file(self, queue_id: str) -> str:
        _check_qid(queue_id)
        with self._lock:
            slot = self._entries.get(queue_id)
        if slot is None:
            raise FileNotFoundError(queue_id)
        return self._slot_file(slot)

    def slot_of(self, queue_id: str) -> int | None:
        with self._lock:
            return self._entries.get(queue_id)

    def entries(self) -> list[tuple[str, int]]:
        """(queue id, slot) of every complete entry, oldest first."""
        with self._lock:
            return sorted(self._entries.items())

    def adopt(self, queue_id: str, slot: int) -> None:
        """Learn an entry another process wrote (the delivery process learns them from the front door)."""
        _check_qid(queue_id)
        with self._lock:
            self._entries[queue_id] = slot

    def released(self, queue_id: str, slot: int) -> None:
        """The entry was removed and its slot emptied (here, or by the delivery process): the slot is free
        again, or deleted when enough are free already."""
        with self._lock:
            if self._entries.get(queue_id) == slot:
                del self._entries[queue_id]
        self.reuse(slot)

    def reuse(self, slot: int) -> None:
        """An emptied slot is free again (or deleted when enough are free already); one of another
        process's range goes back to that process (``on_foreign_release``)."""
        with self._lock:
            if not self.owns(slot):
                hook = self.on_foreign_release
            elif slot in self._free_set:
                return
            elif len(self._free) < MAX_FREE:
                self._free.append(slot)
                self._free_set.add(slot)
                return
            else:
                hook = None
        if not self.owns(slot):
            if hook is not None:
                hook(slot)
            return
        self._slot_path(slot).unlink(missing_ok=True)

    def discard(self, slot: int) -> None:
        """An emptied slot of a range no serving process owns any more: its file goes."""
        self._slot_path(slot).unlink(missing_ok=True)

    def forget(self, queue_id: str) -> None:
        """Another process moved the entry away (quarantine): its slot is never used again."""
        with self._lock:
            self._entries.pop(queue_id, None)

    def read(self, queue_id: str) -> SpoolEntry:
        """The entry, checked; CorruptEntry if it fails its checks (then ``quarantine`` it).

        FileNotFoundError, and the entry forgotten, if its slot is empty or holds another entry: the
        delivery process can be handed an entry again that it already removed (after it restarted), and
        the slot may be a new message's by now. Never quarantine that: it is someone else's only copy."""
        data = _read_file(self._entry_file(queue_id))
        entry = decode_entry(data) if data else None
        if entry is None or entry.envelope.queue_id != queue_id:
            self.forget(queue_id)
            raise FileNotFoundError(queue_id)
        return entry

    def envelope(self, queue_id: str) -> Envelope:
        """The entry's envelope from its header alone, without reading the message or checking the
        checksum: for looking at the queue (the admin API), never for delivering. FileNotFoundError if the
        entry is gone (as ``read``), CorruptEntry if the header cannot be read."""
        with self.path(queue_id).open("rb") as file:
            fields = file.readline(128).split(b" ")
            if len(fields) != 4 or fields[0] != _MAGIC:
                if fields == [b""]:
                    self.forget(queue_id)
                    raise FileNotFoundError(queue_id)
                raise CorruptEntry("bad first line")
            try:
                header = file.read(int(fields[2]))
            except ValueError:
                raise CorruptEntry("bad lengths") from None
        envelope = _envelope(header)
        if envelope.queue_id != queue_id:
            self.forget(queue_id)
            raise FileNotFoundError(queue_id)
        return envelope

    def record_outcome(self, queue_id: str, rcpt: str, status: Status, detail: str) -> None:
        """Append one recipient's outcome durably (fsync'd) before delivery acts on it."""
        self._append(queue_id, json.dumps(asdict(Outcome(rcpt, status, detail, time.time())),
                                          separators=(",", ":")))

    def record_retry(self, queue_id: str, attempts: int, next_at: float,
                     replies: Mapping[str, str] | None = None) -> None:
        """Append the entry's retry state durably (fsync'd): ``attempts`` failed so far, the next one due
        at ``next_at`` (Unix time), and the reply that deferred each recipient of this attempt (the
        next hop's words or our own reason; never message content). Called on a deferral, never on the
        accept-and-deliver path."""
        if attempts < 0:
            raise ValueError("attempts must be >= 0")
        record: dict[str, object] = {"attempts": int(attempts), "next_at": float(next_at), "at": time.time()}
        if replies:
            record["replies"] = {str(rcpt): str(reply) for rcpt, reply in replies.items()}
        self._append(queue_id, json.dumps(record, separators=(",", ":")))

    def retry_state(self, queue_id: str) -> RetryState | None:
        """The entry's last recorded retry state, None if it was never deferred. Reads the file itself
        (not this process's index), so it sees a record another process wrote."""
        try:
            data = self._outcome_path(queue_id).read_bytes()
        except FileNotFoundError:
            return None
        with self._lock:
            self._with_outcomes.add(queue_id)
        return _parse_records(data)[1]

    def _append(self, queue_id: str, line: str) -> None:
        fd = os.open(self._outcome_path(queue_id), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line.encode() + b"\n")
            self._fsync(fd)
        finally:
            os.close(fd)
        with self._lock:
            self._with_outcomes.add(queue_id)

    def has_outcomes(self, queue_id: str) -> bool:
        return queue_id in self._with_outcomes

    def outcomes(self, queue_id: str) -> dict[str, Outcome]:
        """Latest outcome per recipient; a torn last line (crash mid-append) is ignored."""
        if not self.has_outcomes(queue_id):
            return {}  # most messages never get an outcomes file: no need to look for one
        try:
            data = self._outcome_path(queue_id).read_bytes()
        except FileNotFoundError:
            return {}
        return _parse_records(data)[0]

    def pending_rcpts(self, entry: SpoolEntry) -> list[str]:
        """Recipients without a final (delivered/failed) outcome yet."""
        done = {r for r, o in self.outcomes(entry.envelope.queue_id).items() if o.status in FINAL}
        return [r for r in entry.envelope.rcpts if r not in done]

    def remove(self, queue_id: str) -> None:
        """Delivery is done with the entry (all recipients final): free its slot, without a sync (a
        truncation lost to a machine crash brings back a delivered message: a duplicate, never a loss).
        The entry goes first, so a crash in between leaves only an orphan outcome file."""
        _check_qid(queue_id)
        with self._lock:
            slot = self._entries.pop(queue_id, None)
        if slot is not None:
            try:
                self._release(queue_id, slot)
            except OSError:
                with self._lock:
                    self._entries[queue_id] = slot  # still there: the caller retries later
                raise
        if queue_id in self._with_outcomes:
            self._outcome_path(queue_id).unlink(missing_ok=True)
            self._with_outcomes.discard(queue_id)

    def _release(self, queue_id: str, slot: int) -> None:
        """Empty the removed entry's slot; then it is free again (the delivery process overrides this to
        tell the front door, which owns the free slots)."""
        os.truncate(self._slot_file(slot), 0)
        self.released(queue_id, slot)

    def quarantine(self, queue_id: str) -> None:
        _check_qid(queue_id)
        self._with_outcomes.discard(queue_id)
        with self._lock:
            slot = self._entries.pop(queue_id, None)
        if slot is not None:
            os.rename(self._slot_path(slot), self._quarantine_path(f"{queue_id}.msg", slot))
        outcomes = self._outcome_path(queue_id)
        if outcomes.exists():
            os.rename(outcomes, self.quarantine_dir / outcomes.name)
        self.fsync_dir(self.quarantine_dir)

    def index_outcomes(self) -> None:
        """For a process that did not run ``recover`` (delivery): which entries have outcome files."""
        names = {name[:-4] for name in os.listdir(self.outcomes_dir) if name.endswith(".out")}
        with self._lock:
            self._with_outcomes = names

    def recover(self) -> RecoveryReport:
        """At start-up, before serving: learn the entries, quarantine torn and corrupt ones, drop orphan
        outcome files, make sure free slots are ready; return the entries for delivery to resume."""
        self.ensure_dirs()
        quarantined: list[str] = []
        entries: dict[str, int] = {}
        free: list[int] = []
        numbers = [int(path.name) for path in slot_files(self.slots)]
        for slot in numbers:
            path = self._slot_path(slot)
            data = path.read_bytes()
            if not data:
                if self.owns(slot):  # another range's free slots are its owner's (``attach``)
                    free.append(slot)
                continue
            try:
                queue_id = decode_entry(data).envelope.queue_id
            except CorruptEntry:
                queue_id = None
            if queue_id is None or queue_id in entries:  # torn, corrupt, or a copy (cannot happen)
                target = self._quarantine_path(_quarantine_name(data, slot), slot)
                os.rename(path, target)
                quarantined.append(target.name)
            else:
                entries[queue_id] = slot
        with_outcomes: set[str] = set()
        for name in os.listdir(self.outcomes_dir):
            if name[:-4] not in entries:
                (self.outcomes_dir / name).unlink()
            else:
                with_outcomes.add(name[:-4])
        if quarantined:
            self.fsync_dir(self.quarantine_dir)
        own = [n for n in numbers if self.owns(n)]
        with self._lock:
            self._entries, self._free = entries, sorted(free, reverse=True)  # lowest numbers first
            self._free_set = set(free)
            self._with_outcomes = with_outcomes
            self._next_slot = own[-1] + 1 if own else self._base
        if not self._free:
            self._grow()  # the first message need not wait for it
        return RecoveryReport(tuple(sorted(entries)), tuple(quarantined))

    def attach(self) -> list[tuple[str, int]]:
        """A serving process other than the first, at its start (the first ran ``recover``): take this
        range's empty slots as free, quarantine a torn entry (a process that died mid-write never
        acknowledged it), and return the range's complete entries, (queue id, slot), for the first
        process to learn (it ignores those it knows: an earlier run of this process reported them)."""
        self.ensure_dirs()
        found: list[tuple[str, int]] = []
        free: list[int] = []
        own = [n for n in (int(path.name) for path in slot_files(self.slots)) if self.owns(n)]
        for slot in own:
            path = self._slot_path(slot)
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue  # unlinked by its release meanwhile
            if not data:
                free.append(slot)
                continue
            try:
                found.append((decode_entry(data).envelope.queue_id, slot))
            except CorruptEntry:
                os.rename(path, self._quarantine_path(_quarantine_name(data, slot), slot))
                self.fsync_dir(self.quarantine_dir)
        with self._lock:
            self._next_slot = own[-1] + 1 if own else self._base
        self._make_free(sorted(free, reverse=True))
        if not self._free:
            self._grow()
        return found

    def _slot_path(self, slot: int) -> Path:
        return Path(self._slot_file(slot))

    def _slot_file(self, slot: int) -> str:
        return f"{self._slots_prefix}{slot:08d}"  # a str: no Path objects per message

    def _quarantine_path(self, name: str, slot: int) -> Path:
        """Never over an earlier quarantined file: each may be someone's only copy."""
        path = self.quarantine_dir / name
        return path if not path.exists() else self.quarantine_dir / f"slot-{slot:08d}-{time.time_ns()}.msg"

    def _outcome_path(self, queue_id: str) -> Path:
        _check_qid(queue_id)
        return self.outcomes_dir / f"{queue_id}.out"


def _read_file(path: str) -> bytes:
    """The whole file, as ``Path.read_bytes`` reads it, at a third of its cost (no Path, no buffered
    file object): one read of its size, then reads until end of file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.read(fd, os.fstat(fd).st_size + 1)
        while chunk := os.read(fd, 1 << 20):
            data += chunk
        return data
    finally:
        os.close(fd)


def _check_qid(queue_id: str) -> None:
    if not _QID.match(queue_id):
        raise ValueError("not a queue id")


def _parse_records(data: bytes) -> tuple[dict[str, Outcome], RetryState | None]:
    """An outcomes file's latest outcome per recipient and latest retry state; a torn or unknown line
    (crash mid-append) is skipped."""
    outcomes: dict[str, Outcome] = {}
    retry: RetryState | None = None
    replies: dict[str, tuple[str, float]] = {}
    for line in data.splitlines():
        try:
            record = json.loads(line)
            if "rcpt" in record:
                outcome = Outcome(**record)
                outcomes[outcome.rcpt] = outcome
            elif "attempts" in record:
                retry = RetryState(int(record["attempts"]), float(record["next_at"]), float(record["at"]))
                said = record.get("replies")
                if isinstance(said, dict):
                    replies.update((rcpt, (reply, retry.at)) for rcpt, reply in said.items()
                                   if isinstance(rcpt, str) and isinstance(reply, str))
        except (ValueError, TypeError, KeyError, AttributeError):
            continue
    if retry is not None and replies:
        retry = replace(retry, replies=replies)
    return outcomes, retry


def _quarantine_name(data: bytes, slot: int) -> str:
    """Named by the queue id when the header still shows it (logs carry queue ids), else by slot."""
    found = _QID_IN_HEADER.search(data[:4096])
    return f"{found.group(1).decode()}.msg" if found else f"slot-{slot:08d}.msg"
