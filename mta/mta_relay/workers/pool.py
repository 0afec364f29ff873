"""The first process's side of the extra SMTP serving processes: start each on the inherited listening
sockets, learn the entries they make durable (and hand them to delivery), answer their quota questions
from the pod's one ``QuotaTracker``, pass AUTH failures between them, give their emptied slots back,
gather their metrics, tell them to reload and to drain, and start one again if it dies."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mta_relay.delivery.channel import Channel, Message
from mta_relay.relay import Relay
from mta_relay.smtp_serving import Listener
from mta_relay.spool import SLOT_RANGE
from mta_relay.workers.protocol import PRIMARY_REPLIES, quota_of

log = logging.getLogger("mta_relay.workers")
RESTART_DELAY = 1.0
METRICS_TIMEOUT = 2.0


@dataclass
class _Worker:
    index: int
    proc: asyncio.subprocess.Process
    channel: Channel
    ready: bool = False


class WorkerPool:
    def __init__(self, relay: Relay, config_dir: Path, listeners: list[Listener], count: int,
                 pod_name: str | None) -> None:
        """``count``: serving processes in all, the first (this one) included."""
        self.relay, self.config_dir, self.listeners = relay, config_dir, listeners
        self.count, self.pod_name = count, pod_name
        self.restarts = 0
        self._workers: dict[int, _Worker] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._loop = asyncio.get_running_loop()
        relay.spool.on_foreign_release = self._give_back
        relay.throttle.on_failure = self._auth_failed_here

    def start(self) -> None:
        for index in range(1, self.count):
            self._tasks.append(asyncio.create_task(self._run(index), name=f"smtp-worker-{index}"))

    @property
    def running(self) -> int:
        """Serving processes that serve now, the first included."""
        return 1 + sum(1 for worker in self._workers.values() if worker.ready)

    async def _run(self, index: int) -> None:
        while not self._stopped():
            try:
                worker = await self._spawn(index)
            except OSError as error:
                log.error("cannot start an SMTP serving process", extra={"fields": {
                    "event": "smtp_worker_failed", "worker": index, "error": type(error).__name__}})
                await asyncio.sleep(RESTART_DELAY)
                continue
            self._workers[index] = worker
            while (message := await worker.channel.receive()) is not None:
                self._handle(worker, message)
            code = await worker.proc.wait()
            worker.channel.close()
            worker.ready = False
            self._count()
            if self._stopped():
                return
            self.restarts += 1
            log.error("SMTP serving process exited; starting it again", extra={"fields": {
                "event": "smtp_worker_exited", "worker": index, "exit_code": code}})
            await asyncio.sleep(RESTART_DELAY)

    def _stopped(self) -> bool:
        """``drain`` has begun. Asked by a call: mypy would carry a check of the attribute across the
        awaits after it, during which ``drain`` may run."""
        return self._stopping

    async def _spawn(self, index: int) -> _Worker:
        ours, theirs = socket.socketpair()
        with theirs:
            listener_args = [arg for listener in self.listeners for arg in ("--listener", listener.spec())]
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mta_relay.workers.process", "--config", str(self.config_dir),
                "--worker", str(index), "--channel-fd", str(theirs.fileno()), "--parent", str(os.getpid()),
                "--log-level", logging.getLevelName(logging.getLogger().getEffectiveLevel()),
                *listener_args, *(["--pod-name", self.pod_name] if self.pod_name else []),
                pass_fds=(theirs.fileno(), *(listener.sock.fileno() for listener in self.listeners)),
                stdin=asyncio.subprocess.DEVNULL)
        return _Worker(index, proc, await Channel.open(ours, PRIMARY_REPLIES))

    def _handle(self, worker: _Worker, message: Message) -> None:
        op = message["op"]
        tracker = self.relay.quota
        if op == "queued":
            self._learn(message["qid"], message["slot"])
        elif op == "quota":
            quota = quota_of(message["quota"])
            ok = (not tracker.exhausted(message["user"], quota) if message.get("check")
                  else tracker.charge(message["user"], quota))
            worker.channel.send({"op": "quota_answer", "id": message["id"], "ok": ok})
        elif op == "charged":
            tracker.charge(message["user"], quota_of(message["quota"]))
        elif op == "refund":
            tracker.refund(message["user"], quota_of(message["quota"]))
        elif op == "used":
            tracker.record_use(message["user"], message["ip"])
        elif op == "auth_failed":
            self.relay.throttle.record(message["ip"], message["user"])
            self._tell_others(worker.index, message)
        elif op == "ready":
            for queue_id, slot in message["entries"]:
                self._learn(queue_id, slot)
            worker.ready = True
            self._count()
            log.info("SMTP serving process ready", extra={"fields": {"event": "smtp_worker_ready",
                                                                      "worker": worker.index}})

    def _learn(self, queue_id: str, slot: int) -> None:
        """An entry a serving process made durable: delivery gets it once (a restarted process reports
        its range's entries again)."""
        spool = self.relay.spool
        if spool.slot_of(queue_id) == slot:
            return
        spool.adopt(queue_id, slot)
        if self.relay.queued is not None:
            self.relay.queued(queue_id)

    def _count(self) -> None:
        self.relay.metrics.serving_processes.set(self.running)

    def _give_back(self, slot: int) -> None:
        """A slot of a serving process's range was emptied by delivery: its owner may use it again (one
        not running now finds it empty when it starts). A range no process owns any more (the pod runs
        fewer processes than when the entry was written) loses the empty file. Called from any thread."""
        owner = slot // SLOT_RANGE
        if not 0 < owner < self.count:
            self.relay.spool.discard(slot)
            return
        self._loop.call_soon_threadsafe(self._send_to, owner, {"op": "released", "slot": slot})

    def _send_to(self, index: int, message: Message) -> None:
        worker = self._workers.get(index)
        if worker is not None and worker.proc.returncode is None:
            worker.channel.send(message)

    def _auth_failed_here(self, ip: str, username: str) -> None:
        self._tell_others(0, {"op": "auth_failed", "ip": ip, "user": username})

    def _tell_others(self, source: int, message: Message) -> None:
        for index in self._workers:
            if index != source:
                self._send_to(index, message)

    async def metrics_texts(self) -> list[str]:
        """Each running serving process's exposition (one that does not answer in time is left out)."""
        async def ask(worker: _Worker) -> str:
            try:
                async with asyncio.timeout(METRICS_TIMEOUT):
                    return str((await worker.channel.request({"op": "metrics"}))["text"])
            except (TimeoutError, ConnectionError):
                return ""
        running = [w for w in self._workers.values() if w.ready and w.proc.returncode is None]
        return [text for text in await asyncio.gather(*(ask(w) for w in running)) if text]

    def reload(self) -> None:
        for index in self._workers:
            self._send_to(index, {"op": "reload"})

    async def drain(self, deadline: float) -> None:
        """Each serving process ends its sessions by ``deadline`` (a monotonic time) and exits; one that
        has not exited a second later is killed."""
        self._stopping = True
        for index in self._workers:
            self._send_to(index, {"op": "drain", "seconds": max(0.0, deadline - time.monotonic())})
        procs = [worker.proc for worker in self._workers.values()]
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic()) + 1.0):
                await asyncio.gather(*(proc.wait() for proc in procs))
        except TimeoutError:
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
            await asyncio.gather(*(proc.wait() for proc in procs))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._count()
