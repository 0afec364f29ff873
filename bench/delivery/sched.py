"""How long a peer's threads waited for a CPU: the second field of /proc/<pid>/task/<tid>/schedstat
(nanoseconds runnable but not running). On a shared 2-core machine this is where much of a peer's time
goes; a peer that needs more CPU per message, or more wake-ups, waits more.

Threads that exit between two snapshots take their figures with them (Postfix's smtpd and cleanup
processes do, the relay's threads do not), so for a many-process peer the total is a lower bound."""

from __future__ import annotations

import os

from bench.frontdoor import proctree


def thread_waits(root: int) -> dict[tuple[int, int], int]:
    """(pid, tid) → nanoseconds spent waiting on a run queue, for every thread of ``root`` and under it."""
    waits: dict[tuple[int, int], int] = {}
    for pid in [root, *proctree.descendants(root)]:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:  # gone
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as stat:
                    waits[(pid, int(tid))] = int(stat.read().split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return waits


def waited_seconds(before: dict[tuple[int, int], int], after: dict[tuple[int, int], int]) -> float:
    """Run-queue wait between two snapshots; a thread born in between counts from zero."""
    return sum(ns - before.get(key, 0) for key, ns in after.items()) / 1e9
