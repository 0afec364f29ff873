"""The small state files under ``<spool root>/state/`` that let a restarted MTA resume where it stopped.

The spool holds the mail and each entry's retry record (``spool``); this module owns the rest of what
survives a restart, since the spool volume outlives the pod: the delivery rate window (delivery process,
``ratelimit.json``), the per-credential quota counts (front door, ``quota.json``) and the queue's
suspensions (delivery process, ``suspensions.json``). It writes and parses these formats, and nothing else
does. Each file is one JSON object, replaced whole and atomically (temp
file, fsync, rename, directory fsync), so a reader sees the old or the new file, never a mix::

    ratelimit.json  {"version": 1, "starts": [<Unix time of a delivery start>, ...]}
    quota.json      {"version": 2,
                     "own": {"<username>": [<period start>, <count>, <last used>, "<last client address>"]},
                     "peers": {"<pod name>": {"<username>": [<start>, <count>, <last used>, "<addr>"]}}}
    suspensions.json {"version": 1, "domains": {"<domain>": {"by": "<who>", "at": <Unix time>}},
                      "credentials": {"<username>": {"by": "<who>", "at": <Unix time>}}}

(times are Unix seconds; a period start is the start of the UTC calendar period, see ``quota``; a last
use of 0 is unknown). A version 1 quota file (``{"used": {"<username>": [<window>, <count>, <period
seconds>]}}``) still loads: its window times its period is the period start, which matches the calendar
hour and day (a 30-day window matches no calendar month and so counts for nothing).

None holds a secret: times, usernames, domains, counts, client addresses and who suspended what. The
directory is mode 0700, the files 0600.
A missing, unreadable or malformed file reads as empty: the MTA then starts as if fresh (logged), which
is what it did before these files existed, never a reason not to start.

``Debounced`` writes a file at most about once a ``interval`` while its content changes (the first change
at once, the next ones batched), off the event loop, and once more on ``flush`` at drain or stop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from mta_relay.quota import Count

T = TypeVar("T")
log = logging.getLogger("mta_relay.state")
STATE_DIR = "state"
RATE_WINDOW_FILE = "ratelimit.json"
QUOTA_FILE = "quota.json"
SUSPENSIONS_FILE = "suspensions.json"
FORMAT_VERSION = 1
QUOTA_VERSION = 2
Counts = tuple[dict[str, Count], dict[str, dict[str, Count]]]  # own, and each peer's (``quota``)


def state_dir(spool_root: Path) -> Path:
    return spool_root / STATE_DIR


def rate_window_path(spool_root: Path) -> Path:
    return state_dir(spool_root) / RATE_WINDOW_FILE


def quota_path(spool_root: Path) -> Path:
    return state_dir(spool_root) / QUOTA_FILE


def suspensions_path(spool_root: Path) -> Path:
    return state_dir(spool_root) / SUSPENSIONS_FILE


# --- formats ----------------------------------------------------------------------------------------
def encode_rate_window(starts: list[float]) -> bytes:
    return json.dumps({"version": FORMAT_VERSION, "starts": [round(t, 6) for t in starts]},
                      separators=(",", ":")).encode()


def decode_rate_window(data: bytes) -> list[float]:
    """Start times (Unix), oldest first; ValueError if the file is not this format."""
    raw = _object(data)
    starts = raw.get("starts")
    if not isinstance(starts, list) or not all(isinstance(t, int | float) for t in starts):
        raise ValueError("starts is not a list of times")
    return sorted(float(t) for t in starts)


def encode_quota(counts: Counts) -> bytes:
    own, peers = counts

    def table(entries: dict[str, Count]) -> dict[str, list[Any]]:
        return {u: [c.start, c.sent, round(c.last_used, 3), c.last_from] for u, c in sorted(entries.items())}
    return json.dumps({"version": QUOTA_VERSION, "own": table(own),
                       "peers": {name: table(entries) for name, entries in sorted(peers.items())}},
                      separators=(",", ":")).encode()


def decode_quota(data: bytes) -> Counts:
    """Own and peers' counts (username → Count); ValueError if the file is not this format."""
    raw = json.loads(data)
    if isinstance(raw, dict) and raw.get("version") == 1:
        return _quota_v1(raw), {}
    if not isinstance(raw, dict) or raw.get("version") != QUOTA_VERSION:
        raise ValueError("not a version 2 quota file")
    peers = raw.get("peers")
    if not isinstance(peers, dict):
        raise ValueError("peers is not an object")
    return _counts(raw.get("own")), {str(name): _counts(entries) for name, entries in peers.items()}


def _counts(entries: object) -> dict[str, Count]:
    if not isinstance(entries, dict):
        raise ValueError("counts are not an object")
    result: dict[str, Count] = {}
    for username, entry in entries.items():
        if (not isinstance(entry, list) or len(entry) != 4
                or not all(_number(n) for n in entry[:3]) or not isinstance(entry[3], str)
                or not isinstance(entry[1], int) or entry[1] < 0):
            raise ValueError("a count is not [start, count, last used, address]")
        result[username] = Count(float(entry[0]), entry[1], float(entry[2]), entry[3])
    return result


def _number(n: object) -> bool:
    return isinstance(n, int | float) and not isinstance(n, bool)


def _quota_v1(raw: dict[str, Any]) -> dict[str, Count]:
    used = raw.get("used")
    if not isinstance(used, dict):
        raise ValueError("used is not an object")
    result: dict[str, Count] = {}
    for username, entry in used.items():
        if (not isinstance(entry, list) or len(entry) != 3
                or not all(isinstance(n, int) and not isinstance(n, bool) for n in entry) or entry[2] < 1):
            raise ValueError("a count is not [window, count, period]")
        result[username] = Count(float(entry[0] * entry[2]), entry[1])
    return result


@dataclass(frozen=True)
class Hold:
    """One suspension: who asked for it (the admin API's actor) and when (Unix time)."""

    by: str
    at: float


Suspensions = tuple[dict[str, Hold], dict[str, Hold]]  # by recipient domain, by credential username


def encode_suspensions(suspensions: Suspensions) -> bytes:
    domains, credentials = suspensions

    def table(holds: dict[str, Hold]) -> dict[str, dict[str, Any]]:
        return {key: {"by": hold.by, "at": round(hold.at, 3)} for key, hold in sorted(holds.items())}
    return json.dumps({"version": FORMAT_VERSION, "domains": table(domains),
                       "credentials": table(credentials)}, separators=(",", ":")).encode()


def decode_suspensions(data: bytes) -> Suspensions:
    """Suspended domains and credentials; ValueError if the file is not this format."""
    raw = _object(data)

    def table(name: str) -> dict[str, Hold]:
        holds = raw.get(name)
        if not isinstance(holds, dict):
            raise ValueError(f"{name} is not an object")
        result: dict[str, Hold] = {}
        for key, hold in holds.items():
            if not isinstance(hold, dict) or not isinstance(hold.get("by"), str) \
                    or not _number(hold.get("at")):
                raise ValueError(f"a suspension in {name} is not {{by, at}}")
            result[str(key)] = Hold(hold["by"], float(hold["at"]))
        return result
    return table("domains"), table("credentials")


def _object(data: bytes) -> dict[str, object]:
    raw = json.loads(data)
    if not isinstance(raw, dict) or raw.get("version") != FORMAT_VERSION:
        raise ValueError("not a version 1 state file")
    return raw


# --- files ------------------------------------------------------------------------------------------
def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old file or the new one, whole."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            written = 0
            while written < len(data):
                written += os.write(fd, memoryview(data)[written:])
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)  # the rename itself must survive a machine crash
    finally:
        os.close(dir_fd)


def load(path: Path, decode: Callable[[bytes], T], empty: T) -> T:
    """The file's content, or ``empty`` if it is missing or unusable (then logged: a fresh start)."""
    try:
        return decode(path.read_bytes())
    except FileNotFoundError:
        return empty
    except (OSError, ValueError) as error:
        log.warning("state file unusable, starting without it", extra={"fields": {
            "event": "state_file_unusable", "file": path.name, "error": type(error).__name__}})
        return empty


class Debounced:
    """Writes ``encode()`` to ``path`` at most about once per ``interval`` seconds while ``changed`` is
    called, and on ``flush``. ``encode`` runs on the loop (a consistent snapshot), the write in a thread."""

    def __init__(self, path: Path, encode: Callable[[], bytes], interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path, self._encode, self.interval, self._clock = path, encode, interval, clock
        self._dirty = False
        self._last = float("-inf")
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one write at a time: an older snapshot never lands last
        self.writes = 0

    def changed(self) -> None:
        """The content changed: write it now if the last write is ``interval`` old, else when it is."""
        self._dirty = True
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._later())

    async def _later(self) -> None:
        while self._dirty:  # changes made during a write are written by the next round
            await asyncio.sleep(max(0.0, self._last + self.interval - self._clock()))
            # Shielded: a flush cancels the wait, never a write half done (it waits for it instead).
            if not await asyncio.shield(self._write()):
                return  # a failed write is tried again at the next change or flush, not in a loop

    async def flush(self) -> None:
        """Write now if anything changed since the last write (drain, stop)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._write()

    async def _write(self) -> bool:
        async with self._lock:
            if not self._dirty:
                return True
            self._dirty, self._last = False, self._clock()
            data = self._encode()
            try:
                await asyncio.to_thread(write_atomic, self.path, data)
            except OSError as error:
                self._dirty = True
                log.error("state file not written", extra={"fields": {
                    "event": "state_file_write_failed", "file": self.path.name,
                    "error": type(error).__name__}})
                return False
            self.writes += 1
            return True
