"""An extra SMTP serving process: ``python -m mta_relay.workers.process --config DIR --worker N
--channel-fd FD --parent PID --listener FD:LABEL:IMPLICIT … [--pod-name NAME]``.

The first process (``mta-relay``) starts it on the listening sockets it opened (``workers.pool``). It serves
SMTP exactly as the first process does (the same session, policy and acceptance), with its own event loop,
interpreter and GIL, so the pod's SMTP work spreads over its CPUs. What it does not own it asks for or
reports over the channel (``workers.protocol``): the quota counts (``workers.ledger``), AUTH failures (so
the throttle counts the pod's), each entry it made durable (delivery belongs to the first process), its
metrics. Its spool slots are a range of its own (``spool.SLOT_RANGE``), so no lock is shared on the hot
path; its events go to the MTA's event store through its own writer.

It ignores SIGTERM, SIGINT and SIGHUP (the first process says when to reload and when to drain) and dies
with the first process (``child_process``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import socket
import time
from pathlib import Path

from prometheus_client import generate_latest

from mta_relay import child_process, config_loader, event_loop, generation, logs, smtp_serving
from mta_relay.config_loader import ConfigError
from mta_relay.delivery.channel import Channel
from mta_relay.events import from_config as events_config
from mta_relay.events.store import EventWriter
from mta_relay.relay import Relay
from mta_relay.smtp_serving import Listener
from mta_relay.spool import Spool
from mta_relay.suppressions import store as suppression_store
from mta_relay.suppressions.store import SuppressionStore
from mta_relay.workers.ledger import RemoteLedger
from mta_relay.workers.protocol import WORKER_REPLIES

log = logging.getLogger("mta_relay.workers")


async def serve(config_dir: Path, index: int, sock: socket.socket, listeners: list[Listener],
                pod_name: str | None) -> int:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, lambda: None)  # the first process decides
    channel = await Channel.open(sock, WORKER_REPLIES)
    try:
        gen = await asyncio.to_thread(generation.build, config_dir)
    except ConfigError as error:
        log.error("config unusable, not serving", extra={"fields": {
            "event": "config_refused", "worker": index, "reason": str(error)}})
        return 2
    settings = gen.config.settings
    spool = Spool(config_loader.resolve_path(config_dir, settings.queue.path), worker=index)
    found = await asyncio.to_thread(spool.attach)
    relay = Relay(config_dir, gen, spool, pod_name, ledger=RemoteLedger(channel))
    events = relay.events = events_config.writer(config_dir, settings)
    relay.suppressions = await asyncio.to_thread(SuppressionStore, suppression_store.store_path(spool.root))

    def queued(queue_id: str) -> None:
        channel.send({"op": "queued", "qid": queue_id, "slot": spool.slot_of(queue_id)})
        spool.forget(queue_id)  # the first process keeps the pod's entries from now on

    relay.queued = queued
    relay.throttle.on_failure = lambda ip, user: channel.send({"op": "auth_failed", "ip": ip, "user": user})
    servers = await smtp_serving.serve(relay, listeners)
    channel.send({"op": "ready", "entries": found})
    gc.freeze()  # what start-up made lives as long as the process (cli.serve says why)
    deadline = time.monotonic()  # the channel closing (the first process gone) ends at once
    while (message := await channel.receive()) is not None:
        op = message["op"]
        if op == "released":
            spool.reuse(int(message["slot"]))
        elif op == "auth_failed":
            relay.throttle.record(message["ip"], message["user"])
        elif op == "metrics":
            relay.count_spool_writes()
            channel.send({"op": "metrics_text", "id": message["id"],
                          "text": generate_latest(relay.metrics.registry).decode()})
        elif op == "reload":
            await _reload(relay, config_dir, events)
        elif op == "drain":
            deadline = time.monotonic() + float(message["seconds"])
            break
    await smtp_serving.end_sessions(relay, servers, deadline)
    relay.passwords.close()
    await asyncio.to_thread(events.close)
    await asyncio.to_thread(relay.suppressions.close)
    channel.close()
    return 0


async def _reload(relay: Relay, config_dir: Path, events: EventWriter) -> None:
    """The first process found the config changed and took it: take it too, or keep the one in force."""
    try:
        gen = await asyncio.to_thread(generation.build, config_dir)
    except ConfigError:
        return  # the first process logged why
    relay.install(gen)
    settings = gen.config.settings
    events.configure(events_config.filters(settings), events_config.limits(settings))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mta-relay worker", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--worker", type=int, required=True)
    parser.add_argument("--channel-fd", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--listener", action="append", default=[], help="FD:LABEL:IMPLICIT (0 or 1)")
    parser.add_argument("--pod-name", default=None)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    child_process.die_with(args.parent)
    logs.setup(args.log_level, {"worker": args.worker})
    listeners = [Listener.from_spec(spec) for spec in args.listener]
    sock = socket.socket(fileno=args.channel_fd)
    return event_loop.run(serve(args.config, args.worker, sock, listeners, args.pod_name))


if __name__ == "__main__":
    raise SystemExit(main())
