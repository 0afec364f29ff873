"""A free TCP port on a local address, for servers a test starts."""

from __future__ import annotations

import socket

_handed_out: set[tuple[str, int]] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now and that this process has not handed out before: the kernel
    may pick a released port again, and two servers of one test (a relay's SMTP and another's HTTPS
    port) must not be given the same one. Another process could still take it before the test binds it,
    which on a test host does not happen in practice."""
    while True:
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if (host, port) not in _handed_out:
            _handed_out.add((host, port))
            return port
