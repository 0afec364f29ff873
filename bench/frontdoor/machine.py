"""What the results table says about the machine they were measured on."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path


def _first(path: str, prefix: str) -> str:
    for line in Path(path).read_text().splitlines():
        if line.startswith(prefix):
            return line.split(":", 1)[1].strip()
    return "unknown"


def _run(*argv: str) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return "not installed"
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) else "unknown"


def describe(workdir: Path) -> dict[str, str]:
    fs = _run("findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", str(workdir))
    return {
        "cpus": f"{os.cpu_count()} ({_first('/proc/cpuinfo', 'model name')})",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postfix": _run("postconf", "-d", "-h", "mail_version"),
        "dovecot": _run("dovecot", "--version"),
        "queue/spool filesystem": f"{fs} ({workdir})",
        "load average at start": load_average(),
    }


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def load_average_1m() -> float:
    """The 1-minute load average now: beside each run, how busy the shared machine was."""
    return float(Path("/proc/loadavg").read_text().split()[0])
