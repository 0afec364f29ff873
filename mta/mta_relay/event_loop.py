"""Which event loop each of the relay's processes runs on: the front door (``cli``) on asyncio's own,
the delivery process (``delivery.worker``) on uvloop when it is installed; ``MTA_RELAY_LOOP=asyncio`` or
``=uvloop`` puts both on that one (the delivery process inherits the front door's environment).

Why the split, measured with ``bench.frontdoor.ab_relay`` (2 cores shared with the load generator;
CPU ms per message, median and min-max of 4-6 interleaved rounds):
- the delivery process (an SMTP client) on uvloop, the front door on asyncio in both: 1.50 (1.25-1.68)
  → 0.98 (0.86-1.13) at 100 messages per connection and 10 clients, 1.26 (1.01-1.49) → 1.17
  (1.01-1.23) at one message per connection and 50 clients;
- the front door on uvloop: 1.17 (1.15-1.23) → 1.25 (1.19-1.28) and 2.38 (2.31-2.41) → 2.54
  (2.52-2.59), no better on a busier hour. Its TLS is aiosmtpd's STARTTLS, which lays asyncio's
  pure-Python ``sslproto`` over the loop's transport whatever the loop; on uvloop, the transport's
  write under it held the GIL in 14% of the GIL-holding samples (``profile_relay --gil``), asyncio's
  write in about 3%.
Both loops pass the relay, delivery, events and client test tiers.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

ENV = "MTA_RELAY_LOOP"
Loop = Literal["uvloop", "asyncio"]
CHOICES: tuple[Loop, ...] = ("uvloop", "asyncio")
T = TypeVar("T")


def chosen(preferred: Loop = "asyncio") -> Loop:
    """``MTA_RELAY_LOOP`` when set (ValueError for anything but the two names, ImportError when it names
    uvloop and uvloop is not installed), else ``preferred`` (asyncio when uvloop is not installed)."""
    wanted = os.environ.get(ENV, "").strip().lower()
    if wanted and wanted not in CHOICES:
        raise ValueError(f"{ENV} must be one of {', '.join(CHOICES)}, not {wanted!r}")
    if (wanted or preferred) == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if wanted:
            raise
        return "asyncio"
    return "uvloop"


def loop_factory(preferred: Loop = "asyncio") -> Callable[[], asyncio.AbstractEventLoop]:
    if chosen(preferred) == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def new_event_loop(preferred: Loop = "asyncio") -> asyncio.AbstractEventLoop:
    """A loop of the chosen kind, for a caller that runs one by hand (a relay in a test's thread)."""
    return loop_factory(preferred)()


def run(main: Coroutine[Any, Any, T], preferred: Loop = "asyncio") -> T:
    """``asyncio.run`` on the chosen loop."""
    with asyncio.Runner(loop_factory=loop_factory(preferred)) as runner:
        return runner.run(main)
