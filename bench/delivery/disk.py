"""How long one fsync takes on the file system under the queues: what bounds a peer that syncs before
each 250 when only one client sends. Measured, not assumed: the machine's disk is shared."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path


def fsync_latency_ms(directory: Path, rounds: int = 50) -> dict[str, float]:
    """Median and 90th percentile of write(1 KiB) + fsync of a new file, and of an fsync of its directory."""
    files, dirs = [], []
    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        for n in range(rounds):
            started = time.perf_counter()
            fd = os.open(Path(scratch) / f"probe-{n}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, b"x" * 1024)
            os.fsync(fd)
            os.close(fd)
            synced = time.perf_counter()
            dir_fd = os.open(scratch, os.O_RDONLY | os.O_DIRECTORY)
            os.fsync(dir_fd)
            os.close(dir_fd)
            files.append(synced - started)
            dirs.append(time.perf_counter() - synced)
    return {"file_p50_ms": _ms(statistics.median(files)), "file_p90_ms": _ms(_p90(files)),
            "dir_p50_ms": _ms(statistics.median(dirs)), "dir_p90_ms": _ms(_p90(dirs))}


def _p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)
