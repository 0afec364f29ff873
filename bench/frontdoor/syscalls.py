"""Counting a process tree's sync syscalls: the process runs under ``strace -f`` with a seccomp-bpf
filter, so only the syscalls counted here stop it (the others run at full speed), and each one is one
line in a log that we count between two points of the run."""

from __future__ import annotations

import re
from pathlib import Path

SYNC_SYSCALLS = ("fsync", "fdatasync", "sync_file_range", "syncfs", "sync")
# "1234 fsync(5) = 0" or "1234 fsync(5 <unfinished ...>": the call itself, never its "resumed" half.
_CALL = re.compile(rf"^\d+\s+({'|'.join(SYNC_SYSCALLS)})\(", re.MULTILINE)


def count_sync_calls(log_text: str) -> int:
    return len(_CALL.findall(log_text))


class SyncTrace:
    def __init__(self, log: Path) -> None:
        self.log = log

    def wrap(self, argv: list[str]) -> list[str]:
        # -y names the file behind the descriptor, -T the time spent in the call: the delivery bench says
        # where syncs go and what they cost.
        return ["strace", "-f", "--seccomp-bpf", "-qq", "-y", "-T", "-e", "signal=none",
                "-e", "trace=" + ",".join(SYNC_SYSCALLS), "-o", str(self.log), "--", *argv]

    def count(self) -> int:
        """Sync syscalls so far (strace writes each line as it happens)."""
        return count_sync_calls(self.log.read_text(errors="replace")) if self.log.exists() else 0
