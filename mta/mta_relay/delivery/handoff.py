"""The leaving side of the scale-down hand-off, in the delivery process. While this MTA's pod is named in
``handoff.leaving``, delivery starts no new attempts (``QueueRunner.pause``) and every queued entry — and
any that arrives later — goes to a peer that stays (``handoff.PeerClient``), a few at a time, spread
across the peers. An entry is removed here only after the peer's 200, so it is durable there before it
is forgotten here. A failed hand-off puts that peer on a backoff and the entry is tried again, with
another peer if there is one; nothing is dropped. When ``leaving`` no longer names this MTA, the entries
not handed off go back to delivery.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sqlite3
import time
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from mta_relay import config_loader, handoff
from mta_relay.config import HandoffPeer, RelaySettings
from mta_relay.events.store import EventStore, StoreError
from mta_relay.events.webhooks import WebhookSender
from mta_relay.queue import QueueRunner
from mta_relay.spool import CorruptEntry, Spool

log = logging.getLogger("mta_relay.handoff")
# Hand-offs in flight at once: each waits on the peer's syncs, which overlap (the file system commits
# concurrent syncs together), so more in flight moves more per second.
CONCURRENCY = 16
POLL_SECONDS = 0.2  # how often newly scheduled entries are collected for the hand-off
PEER_BACKOFF_FIRST, PEER_BACKOFF_CAP = 0.5, 30.0  # seconds a peer rests after failures, doubling


class HandoffSender:
    """Owns the hand-off loop of one delivery process; ``apply`` is called with every settings generation.

    Events go with the mail: before each entry, the events this MTA holds about it (so the peer can
    show the message's whole path); once no mail is left, the events still waiting for webhooks
    (``webhooks`` stops sending here first), so the peer sends them and nothing is lost with this
    MTA's volume."""

    def __init__(self, runner: QueueRunner, spool: Spool, config_dir: Path, pod_name: str | None,
                 registry: CollectorRegistry, events_path: Path | None = None,
                 webhooks: WebhookSender | None = None) -> None:
        self.runner, self.spool, self.config_dir, self.pod_name = runner, spool, config_dir, pod_name
        self.events_path, self.webhooks = events_path, webhooks
        self._store: EventStore | None = None
        self._outboxes_moved = False
        self.sent = Counter("mta_handoff_sent", "Entries handed to a peer MTA on scale-down, by the "
                            "peer's result (stored, duplicate)", ["result"], registry=registry)
        self.failed = Counter("mta_handoff_failures", "Hand-off requests that did not get a 200",
                              registry=registry)
        self.handed_off = 0
        self.failures = 0
        self._peers: list[HandoffPeer] = []
        self._client: handoff.PeerClient | None = None
        self._client_key: tuple[bytes, bytes] | None = None
        self._todo: dict[str, tuple[int, float]] = {}  # claimed queue id → (attempts, next attempt, Unix)
        self._sending: dict[str, asyncio.Task[None]] = {}
        self._rest: dict[str, tuple[int, float]] = {}  # peer url → (failures in a row, resting until)
        self._turn = itertools.count()
        self._progress = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def active(self) -> bool:
        return self._task is not None

    async def apply(self, settings: RelaySettings) -> None:
        """Start, update or end the hand-off as the settings in force say."""
        if not handoff.is_leaving(settings, self.pod_name):
            if self.active:
                await self.stop(give_back=True)
                log.info("hand-off ended, delivering again", extra={"fields": {"event": "handoff_ended"}})
            return
        assert settings.handoff is not None
        leaving = set(settings.handoff.leaving)
        self._peers = [p for p in settings.handoff.peers if p.name != self.pod_name and p.name not in leaving]
        await self._update_client(settings)
        if not self.active:
            self.runner.pause()
            self._task = asyncio.create_task(self._run(), name="handoff")
            log.info("leaving: handing the queue to peers", extra={"fields": {
                "event": "handoff_started", "peers": [p.name for p in self._peers],
                "queued": self.spool.depth()}})

    async def _update_client(self, settings: RelaySettings) -> None:
        assert settings.handoff is not None
        token = await asyncio.to_thread(handoff.read_token, self.config_dir, settings)
        try:
            pem = await asyncio.to_thread(
                config_loader.resolve_path(self.config_dir, settings.tls.cert_file).read_bytes)
            cert = handoff.leaf_certificate(pem)
        except (OSError, ValueError):
            cert = None
        if token is None or cert is None:
            log.error("hand-off cannot start: peer token or certificate unreadable", extra={"fields": {
                "event": "handoff_unconfigured", "token_file": settings.handoff.token_file,
                "cert_file": settings.tls.cert_file}})
            key = None
        else:
            key = (token, cert)
        if key == self._client_key:
            return
        old, self._client, self._client_key = self._client, None, key
        if key is not None:
            self._client = handoff.PeerClient(*key)
        if old is not None:
            self._background(old.close())

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def stop(self, *, give_back: bool) -> None:
        """End the loop. Hand-offs in flight finish first (cutting one off after the peer stored it but
        before its 200 was recorded would leave the entry in both places). ``give_back``: the entries not
        handed off go back to delivery, which resumes."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await asyncio.gather(*self._sending.values(), return_exceptions=True)
        if give_back:
            for queue_id in self._todo:
                self.runner.give_back(queue_id)
            self._todo.clear()
            self.runner.resume()
            if self.webhooks is not None:
                await self.webhooks.resume()
        self._outboxes_moved = False
        if self._store is not None:
            await asyncio.to_thread(self._store.close)
            self._store = None
        if self._client is not None and not give_back:
            await self._client.close()
            self._client, self._client_key = None, None
        await asyncio.gather(*self._closing, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            for queue_id, attempts, next_at in self.runner.claim_idle():
                self._todo.setdefault(queue_id, (attempts, next_at))
            now = time.monotonic()
            for queue_id in self._todo:  # no copy: starting a hand-off does not change _todo
                if len(self._sending) >= CONCURRENCY:
                    break
                if queue_id in self._sending:
                    continue
                peer = self._pick(now)
                if peer is None:
                    break
                self._start(queue_id, peer)
            if not self._todo and not self._sending and not self._outboxes_moved \
                    and await asyncio.to_thread(self.spool.depth) == 0:
                self._outboxes_moved = await self._move_outboxes()
            self._progress.clear()
            try:
                async with asyncio.timeout(POLL_SECONDS):
                    await self._progress.wait()
            except TimeoutError:
                pass

    async def _events_store(self) -> EventStore | None:
        if self._store is None and self.events_path is not None and self.events_path.exists():
            try:
                self._store = await asyncio.to_thread(EventStore, self.events_path)
            except (sqlite3.Error, OSError, StoreError) as error:
                log.error("event store not opened", extra={"fields": {
                    "event": "event_store_open_failed", "error": type(error).__name__}})
        return self._store

    async def _move_outboxes(self) -> bool:
        """The mail is gone: hand every webhook's pending events to a peer, oldest first. True when
        none is left here."""
        store = await self._events_store()
        if store is None:
            return True
        if self.webhooks is not None:
            await self.webhooks.pause()
        for webhook in await asyncio.to_thread(store.webhooks):
            limit = handoff.MAX_EVENTS_PER_REQUEST
            while rows := await asyncio.to_thread(store.take_pending, webhook, limit):
                peer = self._pick(time.monotonic())
                if peer is None or self._client is None:
                    return False
                fields = {"peer": peer.name, "webhook": webhook, "events": len(rows)}
                try:
                    await self._client.send_events(peer.url, [event for _, event in rows], [webhook])
                except Exception as error:  # they stay here: try again at the next turn
                    self._failed(peer, fields, error)
                    return False
                await asyncio.to_thread(store.release_pending, webhook, [seq for seq, _ in rows])
                log.info("webhook events handed off", extra={"fields": {
                    **fields, "event": "events_handed_off"}})
        return True

    async def _send_history(self, queue_id: str, peer: HandoffPeer) -> None:
        """The events held about an entry, to the peer that takes it (raises as ``send`` does)."""
        store = await self._events_store()
        if store is None or self._client is None:
            return
        events = await asyncio.to_thread(store.query, queue_id=queue_id,
                                         limit=handoff.MAX_EVENTS_PER_REQUEST)
        if events:
            await self._client.send_events(peer.url, events)

    def _pick(self, now: float) -> HandoffPeer | None:
        """The next peer in turn that is not resting after failures (round robin spreads the queue)."""
        if self._client is None or not self._peers:
            return None
        for _ in range(len(self._peers)):
            peer = self._peers[next(self._turn) % len(self._peers)]
            if self._rest.get(peer.url, (0, 0.0))[1] <= now:
                return peer
        return None

    def _start(self, queue_id: str, peer: HandoffPeer) -> None:
        task = asyncio.create_task(self._send(queue_id, peer), name=f"handoff-{queue_id}")
        self._sending[queue_id] = task

        def done(_task: asyncio.Task[None]) -> None:
            self._sending.pop(queue_id, None)
            self._progress.set()
        task.add_done_callback(done)

    async def _send(self, queue_id: str, peer: HandoffPeer) -> None:
        client = self._client
        assert client is not None
        attempts, next_at = self._todo[queue_id]
        try:
            entry = await asyncio.to_thread(self.spool.read, queue_id)
        except FileNotFoundError:
            self._done(queue_id)
            return
        except CorruptEntry as error:
            await asyncio.to_thread(self.spool.quarantine, queue_id)
            log.error("spool entry quarantined", extra={"fields": {
                "event": "quarantined", "queue_id": queue_id, "reason": str(error)}})
            self._done(queue_id)
            return
        fields = {"queue_id": queue_id, "peer": peer.name}
        try:
            if self.spool.has_outcomes(queue_id):
                pending = await asyncio.to_thread(self.spool.pending_rcpts, entry)
                state = await asyncio.to_thread(self.spool.retry_state, queue_id)
                if state is not None:  # the durable record wins over this process's memory
                    attempts, next_at = max(attempts, state.attempts), state.next_at
            else:
                pending = list(entry.envelope.rcpts)
            if pending:
                await self._send_history(queue_id, peer)
                headers, body = handoff.encode(entry, pending, attempts, next_at)
                result = await client.send(peer.url, headers, body)
            else:  # every recipient is final already: nothing to hand over
                result = "nothing_pending"
        except Exception as error:  # the entry stays here, whatever went wrong: try again later
            self._failed(peer, fields, error)
            return
        try:
            await self.runner.handed_off(queue_id)
        except OSError as error:  # the peer holds it; removal is tried again (the peer answers duplicate)
            log.error("spool update failed after hand-off", extra={"fields": {
                **fields, "event": "spool_error", "error": type(error).__name__}})
            return
        self._done(queue_id)
        self._rest.pop(peer.url, None)
        if result != "nothing_pending":
            self.handed_off += 1
            self.sent.labels(result).inc()
        log.info("entry handed off", extra={"fields": {**fields, "event": "handed_off", "result": result,
                                                        "recipients": len(pending)}})

    def _done(self, queue_id: str) -> None:
        self._todo.pop(queue_id, None)
        self.runner.drop_claim(queue_id)

    def _failed(self, peer: HandoffPeer, fields: Mapping[str, object], error: Exception) -> None:
        self.failures += 1
        self.failed.inc()
        failures = self._rest.get(peer.url, (0, 0.0))[0] + 1
        rest = min(PEER_BACKOFF_CAP, PEER_BACKOFF_FIRST * 2 ** (failures - 1))
        self._rest[peer.url] = (failures, time.monotonic() + rest)
        # The error's class and, for a refusal, the peer's status and reason: never the body or the token.
        log.warning("hand-off failed, trying again", extra={"fields": {
            **fields, "event": "handoff_failed", "error": type(error).__name__,
            "status": getattr(error, "status", None),
            "reason": str(error) if isinstance(error, handoff.HandoffRefused) else "",
            "peer_rests": round(rest, 3)}})
