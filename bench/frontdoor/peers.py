"""A peer under test: where it listens, how to log in, its processes (for CPU and sync syscalls), and
how to wait for its background work (Postfix delivering its queue) between runs."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.frontdoor.certs import CertFiles
from bench.frontdoor.children import Child, spawn

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

    def cpu_seconds(self) -> float:
        return sum(child.cpu_seconds() for child in self.children)

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


def start_ceiling(workdir: Path, certs: CertFiles, *, traced: bool = False) -> Peer:
    argv = [sys.executable, "-m", "bench.frontdoor.ceiling", "--cert", str(certs.cert_chain),
            "--key", str(certs.key)]
    child = spawn("ceiling", argv, workdir, json_stdout=True, traced=traced)
    ready = child.read_json_line(timeout=20)
    return Peer(CEILING, int(ready["port"]), "bench", "any-password", [child])
