"""The peers' processes, each in its own session with its output in a log file. A process started with
``traced=True`` runs under strace (see syscalls) so that its sync calls can be counted; timing runs start
it untraced, because even a seccomp-filtered strace stops the process at every sync and slows it (the
relay by about a third, measured): the figures would show the tracer. A process is stopped by a signal
to the peer itself, then, failing that, killed."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from bench.frontdoor import proctree
from bench.frontdoor.cpulimit import CpuGroup
from bench.frontdoor.syscalls import SyncTrace

REPO_ROOT = Path(__file__).resolve().parents[2]  # where ``python -m bench.frontdoor.*`` resolves


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    trace: SyncTrace | None  # None: not traced
    log: Path

    def peer_pid(self) -> int:
        """The peer's own process: strace's child when traced, else the process started."""
        if self.trace is None:
            return self.proc.pid
        deadline = time.monotonic() + 5
        while not (found := proctree.children(self.proc.pid)):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: no process under strace; see {self.log}")
            time.sleep(0.05)
        return found[0]

    def cpu_seconds(self) -> float:
        """The peer's processes (strace excluded)."""
        return proctree.tree_cpu_seconds(self.peer_pid())

    def sync_calls(self) -> int | None:
        return self.trace.count() if self.trace is not None else None

    def read_json_line(self, timeout: float) -> dict[str, Any]:
        stdout: IO[bytes] = self.proc.stdout  # type: ignore[assignment]
        ready, _, _ = select.select([stdout], [], [], timeout)
        line = stdout.readline() if ready else b""
        if not line:
            raise RuntimeError(f"{self.name}: no output within {timeout:.0f} s; see {self.log}")
        return json.loads(line)

    def stop(self, timeout: float = 15) -> bytes:
        """SIGTERM to the peer, wait; returns what it still printed on stdout."""
        if self.proc.poll() is None:
            with contextlib.suppress(RuntimeError, ProcessLookupError):
                os.kill(self.peer_pid(), signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            out, _ = self.proc.communicate(timeout=5)
        return out or b""


def spawn(name: str, argv: list[str], workdir: Path, *, json_stdout: bool = False,
          env: dict[str, str] | None = None, traced: bool = False,
          cpu_group: CpuGroup | None = None) -> Child:
    """``cpu_group``: the process starts inside it (bench.frontdoor.cpulimit), and so does all it forks."""
    log = workdir / f"{name}.log"
    trace = SyncTrace(workdir / f"{name}.strace") if traced else None
    argv = trace.wrap(argv) if trace else argv
    with log.open("wb") as sink:  # the child keeps its own descriptor
        proc = subprocess.Popen(cpu_group.wrap(argv) if cpu_group else argv,
                                stdout=subprocess.PIPE if json_stdout else sink,
                                stderr=sink, stdin=subprocess.DEVNULL, start_new_session=True, env=env,
                                cwd=REPO_ROOT)
    return Child(name, proc, trace, log)


def wait_for_port(child: Child, port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        if child.proc.poll() is not None:
            raise RuntimeError(f"{child.name} exited with {child.proc.returncode}; see {child.log}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{child.name}: port {port} not open after {timeout:.0f} s; see {child.log}")
        time.sleep(0.1)


def free_port() -> int:
    """A loopback port that is free now (the peer binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
