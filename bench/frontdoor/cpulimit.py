"""Limiting a peer's whole process tree to N cores, and reading the CPU it used.

One control group per peer and limit: cgroup v2 (``cpu.max``) where the v2 hierarchy has the cpu
controller; else cgroup v1 (``cpu.cfs_quota_us``, the same CFS bandwidth limit, and ``cpuacct.usage``),
which is what a hybrid host such as this bench machine offers; else CPU affinity (``taskset``): the
peer may run on N given cores only, a weaker stand-in, since other work may run on those cores too.

The peer's first process joins its group before it starts (a shell writes its own pid into the group,
then execs the peer), so every worker or child it forks is born inside the limit. The load generator
runs in the bench's own process, outside every group. A group's CPU figure (``usage_usec`` in v2's
``cpu.stat``, ``cpuacct.usage`` in v1) counts every process that was ever in it, children that were
never waited for included, so it is exact for the tree; with affinity the bench falls back to /proc
(bench.frontdoor.proctree)."""

from __future__ import annotations

import os
import shlex
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

PERIOD_US = 100_000
V2, V1, AFFINITY, NONE = "cgroup v2", "cgroup v1", "CPU affinity", "none"


def cpu_max(cores: int, period_us: int = PERIOD_US) -> str:
    """cgroup v2 ``cpu.max``: ``"200000 100000"`` is 2 cores' worth of time every 100 ms."""
    return f"{cores * period_us} {period_us}"


@dataclass(frozen=True)
class Mount:
    path: Path
    fstype: str
    options: frozenset[str]


def parse_mounts(text: str) -> list[Mount]:
    """The cgroup mounts of a /proc/self/mounts text (its controllers are among a v1 mount's options)."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[2] in ("cgroup", "cgroup2"):
            path = fields[1].replace("\\040", " ")
            mounts.append(Mount(Path(path), fields[2], frozenset(fields[3].split(","))))
    return mounts


def usage_usec(cpu_stat: str) -> int | None:
    """``usage_usec`` of a cgroup v2 ``cpu.stat``."""
    for line in cpu_stat.splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return int(value)
    return None


def first_cpus(allowed: set[int], cores: int) -> str:
    """The taskset list of the first ``cores`` CPUs the bench may use."""
    return ",".join(str(cpu) for cpu in sorted(allowed)[:cores])


@dataclass(frozen=True)
class CpuGroup:
    """One peer's limit. ``usage`` None: no group to read (affinity): the caller reads /proc."""

    name: str
    cores: int
    kind: str
    procs: tuple[Path, ...] = ()  # cgroup.procs files the peer's first process writes its pid to
    usage: Path | None = None
    cpu_list: str = ""  # affinity only

    def wrap(self, argv: list[str]) -> list[str]:
        if self.kind == AFFINITY:
            return ["taskset", "-c", self.cpu_list, *argv]
        # The shell joins the group, then becomes the peer (same pid): nothing of the peer runs outside.
        joins = " && ".join(f"echo $$ > {shlex.quote(str(p))}" for p in self.procs)
        return ["sh", "-c", f'{joins} && exec "$@"', "sh", *argv]

    def usage_seconds(self) -> float | None:
        if self.usage is None:
            return None
        try:
            text = self.usage.read_text()
        except OSError:
            return None
        if self.kind == V2:
            usec = usage_usec(text)
            return None if usec is None else usec / 1e6
        return int(text.strip()) / 1e9  # v1 cpuacct.usage: nanoseconds


@dataclass
class CpuLimits:
    """Makes the groups of one bench run, under a parent of its own; ``close`` removes them."""

    kind: str
    note: str  # how the limit is applied, and why not by a better means
    parents: tuple[Path, ...] = ()  # v2: one; v1: the cpu hierarchy's and the cpuacct hierarchy's
    made: list[Path] = field(default_factory=list)

    @classmethod
    def detect(cls, mounts_text: str | None = None) -> CpuLimits:
        if mounts_text is None:
            mounts_text = Path("/proc/self/mounts").read_text()
        mounts = parse_mounts(mounts_text)
        tag = f"mta-bench-{os.getpid()}"
        why: list[str] = []
        for mount in sorted((m for m in mounts if m.fstype == "cgroup2"),
                            key=lambda m: m.path != Path("/sys/fs/cgroup")):
            try:
                if "cpu" not in (mount.path / "cgroup.controllers").read_text().split():
                    why.append(f"{mount.path} (cgroup v2) has no cpu controller")
                    continue
                _enable_cpu(mount.path)
                parent = mount.path / tag
                parent.mkdir()
                _enable_cpu(parent)
            except OSError as exc:
                why.append(f"cgroup v2 at {mount.path} refused: {exc}")
                continue
            return cls(V2, f"cgroup v2, cpu.max in {parent}", (parent,))
        cpu = next((m for m in mounts if m.fstype == "cgroup" and "cpu" in m.options), None)
        acct = next((m for m in mounts if m.fstype == "cgroup" and "cpuacct" in m.options), None)
        if cpu is not None:
            parents = tuple(dict.fromkeys(m.path / tag for m in (cpu, acct) if m is not None))
            try:
                for parent in parents:
                    parent.mkdir()
            except OSError as exc:
                why.append(f"cgroup v1 at {cpu.path} refused: {exc}")
                for parent in parents:
                    if parent.exists():
                        parent.rmdir()
            else:
                usage = "cpuacct.usage" if acct else "/proc (no cpuacct hierarchy)"
                return cls(V1, f"cgroup v1, cpu.cfs_quota_us / cpu.cfs_period_us in {parents[0]}, CPU from "
                           f"{usage}" + (f" ({'; '.join(why)})" if why else ""), parents)
        else:
            why.append("no cgroup v1 cpu hierarchy")
        if shutil.which("taskset"):
            return cls(AFFINITY, "no usable cgroup (" + "; ".join(why) + "): CPU affinity (taskset) instead, "
                       "the peer pinned to N cores that other processes may use too; CPU from /proc")
        return cls(NONE, "no usable cgroup (" + "; ".join(why) + ") and no taskset: the peers ran unlimited")

    def group(self, name: str, cores: int | None) -> CpuGroup | None:
        """A fresh group for one peer at ``cores``; None for no limit (or no means to limit)."""
        if cores is None or self.kind == NONE:
            return None
        if self.kind == AFFINITY:
            return CpuGroup(name, cores, AFFINITY, cpu_list=first_cpus(os.sched_getaffinity(0), cores))
        dirs = [parent / name for parent in self.parents]
        for path in dirs:
            path.mkdir()
            self.made.append(path)
        if self.kind == V2:
            (dirs[0] / "cpu.max").write_text(cpu_max(cores))
            return CpuGroup(name, cores, V2, (dirs[0] / "cgroup.procs",), dirs[0] / "cpu.stat")
        (dirs[0] / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (dirs[0] / "cpu.cfs_quota_us").write_text(str(cores * PERIOD_US))
        usage = next((d / "cpuacct.usage" for d in dirs if (d / "cpuacct.usage").exists()), None)
        return CpuGroup(name, cores, V1, tuple(d / "cgroup.procs" for d in dirs), usage)

    def close(self, wait_seconds: float = 10) -> list[str]:
        """Removes every group (its processes gone by now); what could not be removed, as notes."""
        left: list[str] = []
        for path in [*reversed(self.made), *self.parents]:
            deadline = time.monotonic() + wait_seconds
            while path.exists():
                try:
                    path.rmdir()
                except OSError as exc:  # a process still exiting keeps it busy for a moment
                    if time.monotonic() > deadline:
                        left.append(f"{path} not removed: {exc}")
                        break
                    time.sleep(0.2)
        self.made.clear()
        return left


def _enable_cpu(group: Path) -> None:
    control = group / "cgroup.subtree_control"
    if "cpu" not in control.read_text().split():
        control.write_text("+cpu")
