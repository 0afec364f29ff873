"""The front door's handle on its delivery process (``delivery.worker``): start it, tell it about new
entries, relay its requests (spool a DSN) and its news (slots free again), fetch its metrics, restart
it if it dies, and drain it on shutdown. The front door keeps owning the spool's slots."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
import sys
import time
from pathlib import Path

from mta_relay.config_loader import ConfigError
from mta_relay.delivery.channel import Channel, Message
from mta_relay.spool import Spool, SpoolError

log = logging.getLogger("mta_relay.delivery")
RESTART_DELAY = 1.0  # seconds before a delivery process that died is started again
START_TIMEOUT = 30.0  # for the delivery process to say it is ready (imports, config, DKIM keys)
METRICS_TIMEOUT = 2.0
QUEUE_ADMIN_TIMEOUT = 60.0  # a bounce of many entries spools a DSN for each


class DeliveryProcess:
    def __init__(self, config_dir: Path, spool: Spool, pod_name: str | None = None) -> None:
        self.config_dir, self.spool, self.pod_name = config_dir, spool, pod_name
        self._proc: asyncio.subprocess.Process | None = None
        self._channel: Channel | None = None
        self._task: asyncio.Task[None] | None = None
        self._stores: set[asyncio.Task[None]] = set()
        self._stopping = False

    async def start(self) -> None:
        """Start delivery and wait until it is ready, so that mail accepted from now on goes out at once.
        ConfigError if it cannot start (it logs why: a DKIM key or smarthost file it cannot use)."""
        await self._spawn()
        assert self._channel is not None
        assert self._proc is not None
        try:
            async with asyncio.timeout(START_TIMEOUT):
                ready = await self._channel.receive()
        except TimeoutError:
            ready = None
        if ready is None or ready["op"] != "ready":
            if self._proc.returncode is None:
                self._proc.kill()
            await self._proc.wait()
            self._channel.close()
            raise ConfigError("delivery could not start (see the delivery process's log line)")
        self._task = asyncio.create_task(self._supervise(), name="delivery-process")

    def notify(self, queue_id: str, *, recorded: bool = False) -> None:
        """A new entry was made durable: hand it to delivery. ``recorded``: it came with a retry record
        (a peer handed it over), so delivery schedules it at the recorded next attempt."""
        slot = self.spool.slot_of(queue_id)
        if self._channel is not None and slot is not None:
            self._channel.send({"op": "queued", "qid": queue_id, "slot": slot,
                                **({"recorded": True} if recorded else {})})

    def reconfigure(self) -> None:
        """The config files changed: delivery reads its settings again."""
        if self._channel is not None:
            self._channel.send({"op": "reload"})

    async def metrics_text(self) -> str:
        """Delivery's metrics in the text exposition format; empty if it does not answer in time."""
        if self._channel is None:
            return ""
        try:
            async with asyncio.timeout(METRICS_TIMEOUT):
                return str((await self._channel.request({"op": "metrics"}))["text"])
        except (TimeoutError, ConnectionError):
            return ""

    async def handoff_status(self) -> tuple[int, int]:
        """(entries handed off to peers, failed hand-off requests) since delivery started; (0, 0) if it
        does not answer in time."""
        if self._channel is None:
            return (0, 0)
        try:
            async with asyncio.timeout(METRICS_TIMEOUT):
                reply = await self._channel.request({"op": "handoff_status"})
        except (TimeoutError, ConnectionError):
            return (0, 0)
        return int(reply["handedOff"]), int(reply["failures"])

    async def queue_admin(self, request: Message) -> tuple[int, dict[str, object]]:
        """A queue administration op (``queue_admin``) answered by delivery: (HTTP status, JSON body)."""
        if self._channel is None:
            return 503, {"error": "the delivery process is not running"}
        try:
            async with asyncio.timeout(QUEUE_ADMIN_TIMEOUT):
                reply = await self._channel.request(request)
        except TimeoutError:
            return 504, {"error": f"the delivery process did not answer within {QUEUE_ADMIN_TIMEOUT:.0f} s; "
                                  "the action may still be under way (see the queue)"}
        except ConnectionError:
            return 503, {"error": "the delivery process is restarting: try again in a moment"}
        return int(reply["status"]), dict(reply["body"])

    async def drain(self, deadline: float) -> None:
        """Delivery goes on until ``deadline`` (a monotonic time) less its margin, then stops; what is
        left stays in the spool for the next start."""
        self._stopping = True
        proc, channel = self._proc, self._channel
        if proc is None or channel is None:
            return
        channel.send({"op": "drain", "seconds": max(0.0, deadline - time.monotonic())})
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic()) + 1.0):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
        channel.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _spawn(self) -> None:
        ours, theirs = socket.socketpair()
        with theirs:
            # Forked from the loop's thread, which lives as long as the relay: PR_SET_PDEATHSIG (see
            # the worker) fires when the forking thread ends.
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mta_relay.delivery.worker", "--config", str(self.config_dir),
                "--channel-fd", str(theirs.fileno()), "--parent", str(os.getpid()),
                "--log-level", logging.getLevelName(logging.getLogger().getEffectiveLevel()),
                *(["--pod-name", self.pod_name] if self.pod_name else []),
                pass_fds=(theirs.fileno(),), stdin=asyncio.subprocess.DEVNULL)
        self._channel = await Channel.open(ours)
        for queue_id, slot in self.spool.entries():  # all there is to deliver, as after a restart
            self._channel.send({"op": "queued", "qid": queue_id, "slot": slot})

    async def _supervise(self) -> None:
        while True:
            assert self._channel is not None
            assert self._proc is not None
            while (message := await self._channel.receive()) is not None:
                self._handle(message)
            if self._stopped():
                return
            code = await self._proc.wait()
            log.error("delivery process exited; starting it again", extra={"fields": {
                "event": "delivery_process_exited", "exit_code": code}})
            await asyncio.sleep(RESTART_DELAY)
            if self._stopped():
                return
            await self._spawn()

    def _stopped(self) -> bool:
        """``drain`` has begun. Asked by a call: mypy would carry a check of the attribute across the
        awaits after it, during which ``drain`` may run."""
        return self._stopping

    def _handle(self, message: Message) -> None:
        op = message["op"]
        if op == "released":
            self.spool.released(message["qid"], message["slot"])
        elif op == "gone":
            self.spool.forget(message["qid"])
        elif op == "store":
            task = asyncio.create_task(self._store(message))
            self._stores.add(task)
            task.add_done_callback(self._stores.discard)

    async def _store(self, message: Message) -> None:
        assert self._channel is not None
        channel = self._channel
        fields = message["envelope"]
        try:
            envelope = await self.spool.put(**fields, message=base64.b64decode(message["message"]))
        except SpoolError as error:
            channel.send({"op": "store_failed", "id": message["id"], "error": str(error)})
            return
        channel.send({"op": "stored", "id": message["id"], "envelope": vars(envelope),
                      "slot": self.spool.slot_of(envelope.queue_id)})
