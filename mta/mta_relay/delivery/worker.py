"""The delivery process: ``python -m mta_relay.delivery.worker --config DIR --channel-fd N --parent PID
[--pod-name NAME]``.

``mta-relay`` starts it after recovering the spool and tells it every entry to deliver over the channel
(``delivery.channel``). It runs the queue runner in its own process, off the front door's loop: delivers,
records outcomes, bounces (the DSN is spooled by the front door, which owns the slots) and removes,
telling the front door which slots are free again. While the settings name its pod as leaving, it hands
its queue to the peers instead (``delivery.handoff``). Delivery gets its own interpreter and GIL, so it
uses the second CPU: on one event loop it took about as much of the loop as accepting did.

It runs at a lower CPU priority than the front door (``NICENESS``), ignores SIGTERM and SIGINT (the
front door tells it when to drain), and dies with the front door
(PR_SET_PDEATHSIG): a restarted relay never finds an old delivery process still at work on the spool.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any, Literal

from prometheus_client import CollectorRegistry, generate_latest

from mta_relay import child_process, config_loader, event_loop, logs, queue_admin
from mta_relay.config_loader import ConfigError
from mta_relay.delivery import service
from mta_relay.delivery.channel import Channel
from mta_relay.delivery.handoff import HandoffSender
from mta_relay.delivery.queue_control import QueueControl
from mta_relay.events import from_config as events_config
from mta_relay.events.store import EventWriter
from mta_relay.events.webhooks import WebhookSender
from mta_relay.io_threads import LoopExecutor
from mta_relay.queue import QueueRunner
from mta_relay.spool import Envelope, Spool, SpoolError
from mta_relay.suppressions import store as suppression_store
from mta_relay.suppressions.bounces import BounceSuppressor

log = logging.getLogger("mta_relay.delivery")
# Below the front door when the CPUs are short: a client waits on acceptance, while mail in the spool
# can wait a moment. Measured on 2 busy cores: one message per connection, 10 clients, +15% accepted,
# 100 per connection unchanged. Lowering one's own priority needs no privilege.
NICENESS = 5


class WorkerSpool(Spool):
    """The spool as delivery sees it from its own process: entries are learnt from the front door,
    and the front door is told when a slot is free again or an entry was quarantined."""

    def __init__(self, root: Path, channel: Channel) -> None:
        super().__init__(root)
        self.channel = channel

    async def put(self, *, queue_id: str | None = None, mail_from: str, rcpts: list[str] | tuple[str, ...],
                  credential: str, client_ip: str, source: Literal["smtp", "http"], smtputf8: bool,
                  message: bytes, message_id: str = "") -> Envelope:
        """A DSN: the front door writes it (it owns the free slots); durable when this returns."""
        fields: dict[str, Any] = {"queue_id": queue_id, "mail_from": mail_from, "rcpts": list(rcpts),
                                  "credential": credential, "client_ip": client_ip, "source": source,
                                  "smtputf8": smtputf8, "message_id": message_id}
        try:
            reply = await self.channel.request({"op": "store", "envelope": fields,
                                                "message": base64.b64encode(message).decode()})
        except ConnectionError:
            raise SpoolError("spool write failed: the front door is gone") from None
        if reply["op"] == "store_failed":
            raise SpoolError(reply["error"])
        envelope = Envelope(**{**reply["envelope"], "rcpts": tuple(reply["envelope"]["rcpts"])})
        self.adopt(envelope.queue_id, reply["slot"])
        return envelope

    def _release(self, queue_id: str, slot: int) -> None:
        os.truncate(self._slot_file(slot), 0)
        # Batched: one per message; the front door only takes the slot back (the entry is gone already).
        self.channel.send_threadsafe({"op": "released", "qid": queue_id, "slot": slot}, batched=True)

    def quarantine(self, queue_id: str) -> None:
        super().quarantine(queue_id)
        self.channel.send_threadsafe({"op": "gone", "qid": queue_id})


async def serve(config_dir: Path, sock: socket.socket, pod_name: str | None = None) -> int:
    loop = asyncio.get_running_loop()
    # Every message hops to a thread and back twice or more (read, remove, outcomes): the cheaper hop.
    loop.set_default_executor(LoopExecutor(name="delivery_io"))
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, lambda: None)  # the front door decides when delivery stops
    channel = await Channel.open(sock)
    try:
        settings = await asyncio.to_thread(config_loader.load_settings, config_dir)
        spool = WorkerSpool(config_loader.resolve_path(config_dir, settings.queue.path), channel)
        await asyncio.to_thread(spool.index_outcomes)
        registry = CollectorRegistry()
        runner = await service.start(settings, config_dir, spool, registry)
    except ConfigError as error:
        log.error("delivery config unusable", extra={"fields": {"event": "delivery_config_refused",
                                                                 "reason": str(error)}})
        return 2
    webhooks = WebhookSender(events_config.store_path(config_dir, settings), registry)
    sender = HandoffSender(runner, spool, config_dir, pod_name, registry,
                           events_config.store_path(config_dir, settings), webhooks)
    await sender.apply(settings)
    events = events_config.writer(config_dir, settings, on_commit=webhooks.nudge)
    runner.events, runner.origin = events, (settings.cluster, pod_name or "")
    runner.suppressor = suppressor = BounceSuppressor(
        suppression_store.store_path(config_loader.resolve_path(config_dir, settings.queue.path)),
        settings.suppression)
    await webhooks.apply(events_config.targets(config_dir, settings))
    channel.send({"op": "ready"})
    drain_until: asyncio.Future[float] = loop.create_future()
    # One reader for the whole life: replies to DSN writes must still arrive while draining.
    control = QueueControl(runner, spool, pod_name or "")
    reader = asyncio.create_task(_read(channel, config_dir, spool, runner, sender, registry, drain_until,
                                       events, webhooks, control))
    waiting: set[asyncio.Future[Any]] = {reader, drain_until}
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if sender.active:  # leaving: nothing to deliver; what is not handed off yet waits for the next start
        await sender.stop(give_back=False)
        await runner.stop()
    elif drain_until.done():
        await runner.drain(drain_until.result())
    else:
        await runner.stop()  # the front door closed the channel without a drain: it is gone
    reader.cancel()
    await webhooks.stop()
    await asyncio.to_thread(events.close)  # what was emitted is in the store (and its outboxes)
    await asyncio.to_thread(suppressor.close)
    channel.flush()  # the last slots released, if they still wait for company
    return 0


async def _read(channel: Channel, config_dir: Path, spool: WorkerSpool, runner: QueueRunner,
                sender: HandoffSender, registry: CollectorRegistry,
                drain_until: asyncio.Future[float], events: EventWriter, webhooks: WebhookSender,
                control: QueueControl) -> None:
    while (message := await channel.receive()) is not None:
        op = message["op"]
        if op == "queued":
            spool.adopt(message["qid"], message["slot"])
            if message.get("recorded"):
                await runner.notify_recorded(message["qid"])
            else:
                runner.notify(message["qid"])
        elif op == "metrics":
            channel.send({"op": "metrics_text", "id": message["id"],
                          "text": generate_latest(registry).decode()})
        elif op == "reload":
            try:
                settings = await asyncio.to_thread(config_loader.load_settings, config_dir)
            except ConfigError as error:
                log.error("delivery config refused, previous one stays in force",
                          extra={"fields": {"event": "delivery_config_refused", "reason": str(error)}})
                continue
            service.reconfigure(runner, settings, config_dir)
            await sender.apply(settings)
            events.configure(events_config.filters(settings), events_config.limits(settings))
            if runner.suppressor is not None:
                runner.suppressor.settings = settings.suppression
            await webhooks.apply(events_config.targets(config_dir, settings))
        elif op == "handoff_status":
            channel.send({"op": "handoff_counts", "id": message["id"], "handedOff": sender.handed_off,
                          "failures": sender.failures, "active": sender.active})
        elif op in queue_admin.OPS:  # answered by a task: a bounce's DSN needs this reader meanwhile
            control.handle(channel, message)
        elif op == "drain" and not drain_until.done():
            drain_until.set_result(time.monotonic() + float(message["seconds"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mta-relay delivery", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--channel-fd", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--pod-name", default=None, help="this MTA's pod name (for handoff.leaving)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    child_process.die_with(args.parent)
    os.nice(NICENESS)
    logs.setup(args.log_level)
    sock = socket.socket(fileno=args.channel_fd)
    return event_loop.run(serve(args.config, sock, args.pod_name), preferred="uvloop")


if __name__ == "__main__":
    raise SystemExit(main())
