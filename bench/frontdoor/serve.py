"""How the bench's own Python servers talk to the orchestrator: one JSON line when ready (port, pid),
serve until SIGTERM or SIGINT, then one JSON line of counters."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Awaitable, Callable


async def serve_until_signalled(start: Callable[[], Awaitable[asyncio.Server]],
                                counters: Callable[[], dict[str, int]]) -> None:
    server = await start()
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"port": port, "pid": os.getpid()}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    print(json.dumps(counters()), flush=True)
