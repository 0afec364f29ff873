"""What the relay's child processes (delivery, the extra SMTP serving processes) share: they die with the
process that started them, so a restarted relay never finds an old child still at work on the spool."""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1


def die_with(parent: int) -> None:
    """SIGKILL this process when its parent ends (PR_SET_PDEATHSIG fires when the thread that forked it
    ends: the relay forks from its loop's thread, which lives as long as the relay)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(0)
