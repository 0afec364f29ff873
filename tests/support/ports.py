"""A free TCP port on a local address, for servers a test starts.

When the suite runs as two concurrent pytest processes (``hack/suite.py``), each is given its own range
below the kernel's ephemeral ports (``MTA_TEST_PORTS=low-high``): the kernel never hands out a port there
on its own, and the other process never picks one from this range, so a port found free stays free until
the test binds it. Without the variable, the kernel picks (one pytest process alone).
"""

from __future__ import annotations

import os
import random
import socket

_handed_out: set[tuple[str, int]] = set()
RANGE_VARIABLE = "MTA_TEST_PORTS"


def _range() -> tuple[int, int] | None:
    text = os.environ.get(RANGE_VARIABLE, "")
    if not text:
        return None
    low, _, high = text.partition("-")
    return int(low), int(high)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now and that this process has not handed out before: the kernel
    may pick a released port again, and two servers of one test (a relay's SMTP and another's HTTPS
    port) must not be given the same one."""
    bounds = _range()
    while True:
        with socket.socket() as sock:
            if bounds is None:
                sock.bind((host, 0))
            else:
                try:
                    sock.bind((host, random.randint(*bounds)))
                except OSError:
                    continue  # in use: another
            port = sock.getsockname()[1]
        if (host, port) not in _handed_out:
            _handed_out.add((host, port))
            return port
