"""How many SMTP serving processes an MTA runs: one per CPU the container may use, or the override.

The container's CPU limit is the cgroup v2 ``cpu.max`` quota (Kubernetes writes ``limits.cpu`` there, or
into the CFS quota of cgroup v1's ``cpu`` controller on older nodes); the
CPUs the process may run on (its affinity mask) cap it, since a quota larger than the node's cores buys
nothing. No limit at all: the affinity mask alone. A fractional limit rounds up (1.5 CPUs: 2 processes
that share it), and the count stays within ``1..MAX_WORKERS``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
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


def cfs_limit(quota: str, period: str) -> float | None:
    """CPUs allowed by cgroup v1's ``cpu.cfs_quota_us`` and ``cpu.cfs_period_us`` (-1: no limit)."""
    quota_us, period_us = int(quota), int(period)
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def _v2(directory: Path) -> float | None:
    return cpu_limit((directory / "cpu.max").read_text())


def _v1(directory: Path) -> float | None:
    return cfs_limit((directory / "cpu.cfs_quota_us").read_text(),
                     (directory / "cpu.cfs_period_us").read_text())


def _tightest(mount: Path, own: str, read: Callable[[Path], float | None]) -> float | None:
    """The smallest limit from the process's cgroup up to the hierarchy's mount (a container may see its
    own cgroup at the mount itself)."""
    limits = []
    directory = mount / own.lstrip("/")
    while True:
        try:
            limit = read(directory)
        except (OSError, ValueError):
            limit = None
        if limit is not None:
            limits.append(limit)
        if directory == mount or mount not in directory.parents:
            break
        directory = directory.parent
    return min(limits) if limits else None


def cgroup_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """The tightest CPU limit of this process's cgroups: v2's ``cpu.max`` (the container's and the pod's
    cgroups both carry one) or, on a node still on cgroup v1, the ``cpu`` controller's CFS quota. None: no
    limit, or no cgroup to read."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        hierarchy, controllers, own = [*line.split(":", 2), "", ""][:3]
        if hierarchy == "0" and not controllers:
            found = _tightest(root, own, _v2)
        elif "cpu" in controllers.split(","):
            mount = next((m for m in (root / controllers, root / "cpu", root / "cpu,cpuacct") if m.is_dir()),
                         None)
            found = _tightest(mount, own, _v1) if mount is not None else None
        else:
            continue
        if found is not None:
            limits.append(found)
    return min(limits) if limits else None


def automatic() -> int:
    """The count for this process, from its cgroups' CPU limit and its affinity mask."""
    return sized(cgroup_limit(), len(os.sched_getaffinity(0)))
