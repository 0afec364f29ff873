"""A peer under test: where it listens, how to log in, its processes (for CPU and sync syscalls), and
how to wait for its background work (Postfix delivering its queue) between runs."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.frontdoor import proctree
from bench.frontdoor.certs import CertFiles
from bench.frontdoor.children import Child, spawn
from bench.frontdoor.cpulimit import CpuGroup

CEILING, POSTFIX, RELAY = "aiosmtpd ceiling", "Postfix", "mta-relay"


@dataclass
class Peer:
    name: str
    port: int
    username: str
    password: str
    children: list[Child]
    settle: Callable[[], None] = lambda: None
    notes: list[str] = field(default_factory=list)
    cpu_group: CpuGroup | None = None  # its processes run limited to that group's cores

    def cpu_seconds(self) -> float:
        """From the peer's group when it has one (exact for the whole tree), else from /proc."""
        if self.cpu_group is not None and (used := self.cpu_group.usage_seconds()) is not None:
            return used
        return sum(child.cpu_seconds() for child in self.children)

    def processes(self) -> int:
        """Processes in the peer's trees now (the relay's workers show here)."""
        return sum(1 + len(proctree.descendants(child.peer_pid())) for child in self.children)

    def sync_calls(self) -> int | None:
        """Sync calls so far; None when the peer runs untraced (a timing run)."""
        counts = [child.sync_calls() for child in self.children]
        return None if None in counts else sum(c for c in counts if c is not None)

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()


def stop_all(peers: list[Peer], sink: Child | None) -> str:
    """Stop every peer, then the sink; returns the sink's last output line (its message count)."""
    for peer in peers:
        peer.stop()
    if sink is None:
        return "nothing"
    counts = sink.stop().decode().strip().splitlines()
    return counts[-1] if counts else "nothing"


def wait_drained(queued: Callable[[], int], stall_seconds: float = 10) -> None:
    """Until ``queued()`` is 0, or stops going down for ``stall_seconds`` (delivery not running: the run
    goes on rather than hangs, and the next measurement shows it)."""
    best, since = queued(), time.monotonic()
    while best:
        time.sleep(0.1)
        now = queued()
        if now < best:
            best, since = now, time.monotonic()
        elif time.monotonic() - since > stall_seconds:
            return


def start_ceiling(workdir: Path, certs: CertFiles, *, traced: bool = False, name: str = "ceiling",
                  cpu_group: CpuGroup | None = None) -> Peer:
    """``name``: its log file's name in ``workdir`` (a second start needs its own)."""
    argv = [sys.executable, "-m", "bench.frontdoor.ceiling", "--cert", str(certs.cert_chain),
            "--key", str(certs.key)]
    child = spawn(name, argv, workdir, json_stdout=True, traced=traced, cpu_group=cpu_group)
    ready = child.read_json_line(timeout=20)
    return Peer(CEILING, int(ready["port"]), "bench", "any-password", [child], cpu_group=cpu_group)
