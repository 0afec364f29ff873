"""Events with realistic fields, and a child process that writes the store (to kill it, or to write
from two processes at once)."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from pathlib import Path

from mta_relay.events.record import Event, EventType, Response

_SEQ = itertools.count()


def event(kind: EventType = EventType.DELIVERY, *, recipient: str = "bob@example.net",
          sender: str = "alice@example.com", credential: str = "app", message_id: str = "",
          queue_id: str = "", timestamp: float | None = None) -> Event:
    n = next(_SEQ)
    return Event(type=kind, queue_id=queue_id or f"{n:026x}", sender=sender, recipient=recipient,
                 credential=credential, timestamp=time.time() if timestamp is None else timestamp,
                 created=time.time() - 1, message_id=message_id or f"<{n}.test@example.com>",
                 cluster="mail", mta="mail-0", size=2048, num_attempts=1,
                 response=Response.parse(250, "2.0.0 Ok: queued as 4Xyz"),
                 peer_address={"name": "mx.example.net", "addr": "192.0.2.7"},
                 delivery_protocol="ESMTP", tls_protocol_version="TLSv1.3",
                 tls_cipher="TLS_AES_256_GCM_SHA384")


def child_argv(code: str, *args: str) -> list[str]:
    """A child Python running ``code``, which can import this kit; ``sys.argv[1:]`` are ``args``."""
    here = Path(__file__).resolve().parent
    return [sys.executable, "-c", f"import sys; sys.path[:0] = [{str(here)!r}]\n" + code, *args]


def run_child(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(child_argv(code, *args), capture_output=True, text=True, timeout=timeout,
                          check=False)
