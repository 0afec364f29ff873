"""What one fdatasync per message costs when several messages are made durable at once: the spool's
write pattern (``mta_relay.spool``: a pre-created, synced, empty slot file; one pwrite of the entry at
offset 0; fdatasync; later a truncate to empty without a sync, as delivery frees the slot), run by 1, 4
and 16 threads at once on one directory, each with slots of its own.

Per writer count: fdatasync latency (p50, p90, p99), syncs per second over all threads, this process's
CPU per entry (open, pwrite, fdatasync, close, truncate: user + system), and, when the
directory's file system has a jbd2 journal, its commits from ``/proc/fs/jbd2/<dev>/info`` before and
after (how many fdatasyncs each journal commit served). The counts take turns (1, 4, 16, 1, 4, 16 ...)
for ``--rounds`` rounds.

``--group N`` writes N entries per file and sync instead: the cost per entry an explicit group commit
(one segment file for messages arriving together) would have, for comparison.

``python -m bench.frontdoor.fsync_concurrency [--dir /tmp] [--seconds 3] [--rounds 3] [--size 1300]
[--group 1]``
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench.frontdoor.stats import percentile

SLOTS_PER_WRITER = 64


def _journal_info(directory: Path) -> Path | None:
    """The jbd2 info file of the device holding ``directory`` (None without a journal)."""
    device = os.stat(directory).st_dev
    for mount in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = mount.split()
        major, minor = (int(x) for x in fields[2].split(":"))
        if os.makedev(major, minor) != device:
            continue
        source = mount.split(" - ", 1)[1].split()[1]
        for info in Path("/proc/fs/jbd2").glob("*/info"):
            if info.parent.name.startswith(Path(source).name + "-"):
                return info
    return None


def _commits(info: Path | None) -> int | None:
    if info is None:
        return None
    found = re.search(r"^(\d+) transactions", info.read_text(), re.M)
    return int(found.group(1)) if found else None


def _slots(directory: Path, count: int) -> list[str]:
    paths = []
    for index in range(count):
        path = directory / f"{index:08d}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fsync(fd)
        os.close(fd)
        paths.append(str(path))
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(fd)
    os.close(fd)
    return paths


def _writer(paths: list[str], entry: bytes, until: float, latencies: list[float]) -> None:
    index = 0
    while time.monotonic() < until:
        path = paths[index % len(paths)]
        index += 1
        fd = os.open(path, os.O_WRONLY)
        try:
            os.pwrite(fd, entry, 0)
            started = time.perf_counter()
            os.fdatasync(fd)
            latencies.append(time.perf_counter() - started)
        finally:
            os.close(fd)
        os.truncate(path, 0)  # delivery frees the slot: no sync


def measure(directory: Path, writers: int, seconds: float, size: int, info: Path | None,
            group: int = 1) -> dict[str, float | None]:
    """``group``: entries per write and sync (one file holding ``group`` entries: what an explicit
    group commit would do), 1 for the spool as it is."""
    paths = _slots(directory, writers * SLOTS_PER_WRITER)
    entry = os.urandom(size * group)
    per_thread: list[list[float]] = [[] for _ in range(writers)]
    commits_before = _commits(info)
    cpu_before = time.process_time()
    until = time.monotonic() + seconds
    threads = [threading.Thread(target=_writer, args=(paths[i::writers], entry, until, per_thread[i]))
               for i in range(writers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    commits_after = _commits(info)
    for path in paths:
        os.unlink(path)
    latencies = sorted(x for lat in per_thread for x in lat)
    commits = None if commits_before is None or commits_after is None else commits_after - commits_before
    return {"entries_per_s": group * len(latencies) / elapsed, "syncs_per_s": len(latencies) / elapsed,
            "p50_ms": 1000 * percentile(latencies, 50), "p90_ms": 1000 * percentile(latencies, 90),
            "p99_ms": 1000 * percentile(latencies, 99),
            "cpu_us_per_entry": 1e6 * cpu / (group * len(latencies)),
            "syncs_per_commit": len(latencies) / commits if commits else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=1300, help="entry size (a 1 KiB message + header)")
    parser.add_argument("--group", type=int, default=1,
                        help="entries per write and sync (>1: what an explicit group commit would do)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mta-fsync-", dir=args.dir))
    info = _journal_info(work)
    print(f"{work}: journal {info or 'none (no jbd2 for this file system)'}")
    results: dict[int, list[dict[str, float | None]]] = {w: [] for w in args.writers}
    try:
        for round_ in range(args.rounds):
            for writers in args.writers:
                result = measure(work, writers, args.seconds, args.size, info, args.group)
                results[writers].append(result)
                print(f"round {round_ + 1} writers {writers:>2}: " + "  ".join(
                    f"{k} {v:.2f}" if v is not None else f"{k} -" for k, v in result.items()), flush=True)
    finally:
        for path in work.iterdir():
            path.unlink()
        work.rmdir()
    print(f"\nmedian (min-max) over {args.rounds} rounds")
    for writers, runs in results.items():
        parts = []
        for key in runs[0]:
            values = [float(r[key]) for r in runs if r[key] is not None]  # type: ignore[arg-type]
            parts.append(f"{key} {statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"
                         if values else f"{key} -")
        print(f"writers {writers:>2}: " + "  ".join(parts))


if __name__ == "__main__":
    main()
