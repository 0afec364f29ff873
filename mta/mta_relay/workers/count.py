"""How many SMTP serving processes an MTA runs: one per CPU the container may use, or the override.

The container's CPU limit is the cgroup v2 ``cpu.max`` quota (Kubernetes writes ``limits.cpu`` there); the
CPUs the process may run on (its affinity mask) cap it, since a quota larger than the node's cores buys
nothing. No limit at all: the affinity mask alone. A fractional limit rounds up (1.5 CPUs: 2 processes
that share it), and the count stays within ``1..MAX_WORKERS``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

MAX_WORKERS = 8  # the spool's slot numbers give each serving process a range of its own (spool.SLOT_RANGE)
CGROUP_ROOT = Path("/sys/fs/cgroup")


def cpu_limit(cpu_max: str) -> float | None:
    """CPUs allowed by a cgroup v2 ``cpu.max`` line (``"200000 100000"`` → 2.0); None: no limit."""
    parts = cpu_max.split()
    if not parts or parts[0] == "max":
        return None
    quota = int(parts[0])
    period = int(parts[1]) if len(parts) > 1 else 100_000
    return quota / period if period > 0 else None


def sized(limit: float | None, usable_cpus: int) -> int:
    """Serving processes for a CPU limit (None: none) and the CPUs the process may run on."""
    count = usable_cpus if limit is None else min(usable_cpus, math.ceil(limit))
    return max(1, min(MAX_WORKERS, count))


def cgroup_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """The tightest ``cpu.max`` on the way from this process's cgroup up to the root (the container's
    and the pod's cgroups both carry one); None: no limit, or no cgroup v2 to read."""
    try:
        own = next((line[3:].strip() for line in proc_cgroup.read_text().splitlines()
                    if line.startswith("0::")), None)
    except OSError:
        return None
    if own is None:
        return None
    limits = []
    directory = root / own.lstrip("/")
    while True:
        try:
            limit = cpu_limit((directory / "cpu.max").read_text())
        except (OSError, ValueError):
            limit = None
        if limit is not None:
            limits.append(limit)
        if directory == root or root not in directory.parents:
            break
        directory = directory.parent
    return min(limits) if limits else None


def automatic() -> int:
    """The count for this process, from its cgroups' CPU limit and its affinity mask."""
    return sized(cgroup_limit(), len(os.sched_getaffinity(0)))
