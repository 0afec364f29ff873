"""``mta-relay``: the process each MTA pod runs.

    mta-relay --config DIR [--listen-address IP] [--pod-name NAME] [--workers N] [--log-level INFO]

Exit status 2 when the config cannot be used at start (the reason is logged); SIGTERM/SIGINT shut down
gracefully; SIGHUP reloads the config at once (it is also reloaded when its files change).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
from pathlib import Path

from mta_relay import event_loop, logs
from mta_relay.config_loader import ConfigError
from mta_relay.server import RelayServer
from mta_relay.workers import count

log = logging.getLogger("mta_relay")


async def serve(config_dir: Path, listen_address: str | None = None, pod_name: str | None = None,
                workers: int = 1) -> int:
    server = RelayServer(config_dir, listen_address, pod_name, workers)
    try:
        await server.start()
    except ConfigError as error:
        log.error("config unusable, not starting", extra={"fields": {"event": "config_refused",
                                                                      "reason": str(error)}})
        return 2
    # What start-up made (imports, config, TLS) lives as long as the process: keep it out of every
    # garbage collection (each full one otherwise walks ~60,000 objects on the event loop).
    gc.freeze()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(server.reload()))
    await stop.wait()
    await server.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mta-relay", description=__doc__.splitlines()[1].strip())
    parser.add_argument("--config", type=Path, required=True,
                        help="config directory (relay.yaml, credentials/)")
    parser.add_argument("--listen-address", default=None,
                        help="listen on this address instead of the config's (e.g. the pod IP)")
    parser.add_argument("--pod-name", default=os.environ.get("POD_NAME") or None,
                        help="this MTA's pod name, as handoff.leaving names it (default: $POD_NAME)")
    parser.add_argument("--workers", type=int, default=None, choices=range(1, count.MAX_WORKERS + 1),
                        metavar=f"1..{count.MAX_WORKERS}",
                        help="SMTP serving processes (default: one per CPU of the container's limit)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    logs.setup(args.log_level)
    workers = args.workers or count.automatic()
    return event_loop.run(serve(args.config, args.listen_address or None, args.pod_name or None, workers))
