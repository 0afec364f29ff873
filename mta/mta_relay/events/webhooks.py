"""The webhook sender: asyncio tasks in the delivery process that POST each webhook's outbox (``store``)
to its receiver as signed Standard Webhooks requests, and the owner of the webhook body's format.

One loop per webhook: take the batch the store has formed for it (or a new one from its oldest pending
events), POST it, and on a 2xx mark it delivered; on any other answer, a timeout, a connection or TLS
failure, store when the next attempt is due (exponential backoff, ``backoff_min`` to ``backoff_max``,
jittered) and resend the SAME batch — same ``webhook-id``, same body — so a receiver that got it before
can tell a duplicate. A batch whose oldest event is older than ``give_up_after`` when an attempt fails is
dropped with every other event that old (counted, reason ``expired``); the outbox limit bounds the rest
(``store``, reason ``outbox_full``). Only one batch per webhook is in flight: the events arrive in order.

Request (https://www.standardwebhooks.com)::

    POST <url>
    content-type: application/json
    webhook-id: msg_<...>              the batch id, stable across retries
    webhook-timestamp: <Unix seconds>  of this attempt
    webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>

    {"type": "mta.events", "timestamp": "<ISO 8601, when the batch was formed>",
     "data": {"events": [<Event.to_json()>, ...]}}

The key is the base64 after ``whsec_`` in the webhook's secret. TLS is always verified, against the
system's CAs plus the webhook's ``ca_file``; redirects are not followed (an answer that is not 2xx is a
failure). Plain ``http://`` only for a target that says ``allow_insecure_http``.

Idle loops look at the outbox every ``poll_seconds`` (the front door's events arrive from another
process); ``nudge`` wakes them at once, from any thread (the delivery process's writer calls it after
each commit).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import random
import sqlite3
import ssl
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge

from mta_relay.config import validate_url
from mta_relay.events.record import Event
from mta_relay.events.store import Batch, EventStore, StoreError, WebhookFilter

log = logging.getLogger("mta_relay.webhooks")
PAYLOAD_TYPE = "mta.events"
SECRET_PREFIX = "whsec_"  # noqa: S105 (the prefix, not a secret)
SECRET_BYTES = (24, 64)  # the Standard Webhooks range for a signing key
DEFAULT_TIMEOUT = 10.0
STORE_ERRORS = (sqlite3.Error, OSError, StoreError)


# --- the format -------------------------------------------------------------------------------------
def encode_payload(events: Sequence[Event], timestamp: float) -> bytes:
    """The request body; the same bytes for the same batch (``timestamp``: when it was formed)."""
    when = datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    payload = {"type": PAYLOAD_TYPE, "timestamp": when, "data": {"events": [e.to_json() for e in events]}}
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def decode_payload(body: bytes) -> list[Event]:
    """The events of a request body; ValueError if it is not one."""
    data = json.loads(body)
    if not isinstance(data, dict) or data.get("type") != PAYLOAD_TYPE:
        raise ValueError(f"not an {PAYLOAD_TYPE} payload")
    try:
        return [Event.from_json(e) for e in data["data"]["events"]]
    except (KeyError, TypeError) as error:
        raise ValueError(f"malformed {PAYLOAD_TYPE} payload") from error


def decode_secret(secret: str) -> bytes:
    """The signing key of a ``whsec_<base64>`` secret; ValueError (naming no part of it) if unusable."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the webhook secret is not base64 after 'whsec_'") from None
    if not SECRET_BYTES[0] <= len(key) <= SECRET_BYTES[1]:
        raise ValueError(f"the webhook secret's key is {len(key)} bytes, Standard Webhooks wants "
                         f"{SECRET_BYTES[0]} to {SECRET_BYTES[1]}")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: Standard Webhooks' v1 scheme."""
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


# --- the targets ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WebhookTarget:
    name: str
    url: str
    secret: str = field(repr=False)  # whsec_<base64>
    types: frozenset[str] = frozenset()  # empty: all
    credentials: frozenset[str] = frozenset()  # empty: all
    ca_file: Path | None = None  # trusted besides the system's CAs
    timeout: float = DEFAULT_TIMEOUT  # seconds per request, connect to answer
    allow_insecure_http: bool = False

    @property
    def filter(self) -> WebhookFilter:
        return WebhookFilter(self.name, self.types, self.credentials)


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """Verifying, host name checked: the system's CAs plus ``ca_file``. Reads files: call off the loop."""
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


@dataclass
class _Loop:
    target: WebhookTarget
    task: asyncio.Task[None]
    wake: asyncio.Event


class WebhookSender:
    """Owns the webhook loops of the delivery process; ``apply`` is called with every settings
    generation."""

    def __init__(self, store_path: Path, registry: CollectorRegistry, *, max_batch: int = 100,
                 backoff_min: float = 1.0, backoff_max: float = 600.0, give_up_after: float = 72 * 3600.0,
                 poll_seconds: float = 0.5) -> None:
        self.store_path, self.max_batch = store_path, max_batch
        self.backoff_min, self.backoff_max, self.give_up_after = backoff_min, backoff_max, give_up_after
        self.poll_seconds = poll_seconds
        self.requests = Counter("mta_webhook_requests", "Webhook requests, by webhook and result (success, "
                                "http_error, timeout, connection_error, tls_error)", ["webhook", "result"],
                                registry=registry)
        self.delivered_events = Counter("mta_webhook_events_delivered", "Events a webhook's receiver took",
                                        ["webhook"], registry=registry)
        self.dropped_events = Counter("mta_webhook_events_dropped", "Events dropped from a webhook's outbox "
                                      "undelivered, by reason (outbox_full, expired)", ["webhook", "reason"],
                                      registry=registry)
        self.pending_events = Gauge("mta_webhook_events_pending", "Events waiting for a webhook",
                                    ["webhook"], registry=registry)
        self.oldest_pending = Gauge("mta_webhook_oldest_pending_seconds", "Age of the oldest event waiting "
                                    "for a webhook (0 when none)", ["webhook"], registry=registry)
        self._store: EventStore | None = None
        self._loops: dict[str, _Loop] = {}
        self._dropped_seen: dict[str, int] = {}  # the store's outbox_full count already in the counter
        self._applied = False
        self._paused = False
        self._targets: dict[str, WebhookTarget] = {}
        self._apply_lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def apply(self, targets: Sequence[WebhookTarget]) -> None:
        """Run a loop per target: new ones start, changed ones restart (their batch stays), removed ones
        stop and their outbox is forgotten."""
        async with self._apply_lock:
            self._loop = asyncio.get_running_loop()
            wanted = {t.name: t for t in targets}
            for name, running in list(self._loops.items()):
                if wanted.get(name) != running.target:
                    await self._stop_loop(name)
            removed = [n for n in self._dropped_seen if n not in wanted]
            store = await self._open()
            if store is not None:
                try:
                    if not self._applied:  # left from an earlier config while this MTA was down
                        removed += [n for n in await asyncio.to_thread(store.webhooks) if n not in wanted]
                    for name in removed:
                        await asyncio.to_thread(store.forget_webhook, name)
                        self._forget_metrics(name)
                    self._applied = True
                except STORE_ERRORS as error:
                    _log_store_error("webhook outboxes not forgotten", error)
            self._targets = wanted
            if not self._paused:
                for name, target in wanted.items():
                    if name not in self._loops:
                        self._start_loop(target)

    async def pause(self) -> None:
        """Stop sending (a leaving MTA moves its outboxes to a peer); ``apply`` starts nothing until
        ``resume``. A batch in flight is cut off: its events stay pending."""
        async with self._apply_lock:
            self._paused = True
            for name in list(self._loops):
                await self._stop_loop(name)

    async def resume(self) -> None:
        async with self._apply_lock:
            self._paused = False
            for name, target in self._targets.items():
                if name not in self._loops:
                    self._start_loop(target)

    def nudge(self) -> None:
        """New events may be pending: wake the idle loops. Safe from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with suppress(RuntimeError):  # the loop closed in between
            loop.call_soon_threadsafe(self._wake_all)

    async def stop(self) -> None:
        """Stop every loop (a batch in flight is resent, same id, by the next start) and close the store."""
        async with self._apply_lock:
            for name in list(self._loops):
                await self._stop_loop(name)
            if self._store is not None:
                await asyncio.to_thread(self._store.close)
                self._store = None

    def _wake_all(self) -> None:
        for running in self._loops.values():
            running.wake.set()

    async def _open(self) -> EventStore | None:
        if self._store is None:
            try:
                self._store = await asyncio.to_thread(EventStore, self.store_path)
            except STORE_ERRORS as error:
                _log_store_error("event store not opened", error)
        return self._store

    def _start_loop(self, target: WebhookTarget) -> None:
        problem = validate_url(target.url, target.allow_insecure_http)
        try:
            key = decode_secret(target.secret)
        except ValueError as error:
            problem = problem or str(error)
        if problem is not None:
            log.error("webhook not started", extra={"fields": {
                "event": "webhook_refused", "webhook": target.name, "reason": problem}})
            return
        wake = asyncio.Event()
        task = asyncio.create_task(self._run(target, key, wake), name=f"webhook-{target.name}")
        self._loops[target.name] = _Loop(target, task, wake)
        self._dropped_seen.setdefault(target.name, 0)

    async def _stop_loop(self, name: str) -> None:
        running = self._loops.pop(name)
        running.task.cancel()
        await asyncio.gather(running.task, return_exceptions=True)

    def _forget_metrics(self, name: str) -> None:
        self._dropped_seen.pop(name, None)
        for gauge in (self.pending_events, self.oldest_pending):
            with suppress(KeyError):
                gauge.remove(name)

    # --- one webhook ----------------------------------------------------------------------------
    async def _run(self, target: WebhookTarget, key: bytes, wake: asyncio.Event) -> None:
        name = target.name
        context = await asyncio.to_thread(self._tls_context, target)
        session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=target.timeout),
            connector=aiohttp.TCPConnector(ssl=context, limit=1), headers={"User-Agent": "mta-relay"})
        failures = 0  # in a row
        rest_until = 0.0  # Unix time: no attempt before
        try:
            while True:
                wake.clear()
                store = await self._open()
                try:
                    if store is None:
                        raise StoreError("the event store is not open")
                    batch = await asyncio.to_thread(store.next_batch, name, self.max_batch)
                    await self._observe(store, name)
                except STORE_ERRORS as error:
                    _log_store_error("webhook outbox unreadable", error)
                    await asyncio.sleep(max(self.poll_seconds, 5.0))
                    continue
                if batch is None:
                    with suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), self.poll_seconds)
                    continue
                due = max(batch.next_attempt_at, rest_until) - time.time()
                if due > 0:
                    await asyncio.sleep(due)
                result = await self._post(session, target, key, batch)
                self.requests.labels(name, result).inc()
                try:
                    if result == "success":
                        failures, rest_until = 0, 0.0
                        taken = await asyncio.to_thread(store.delivered, batch)
                        self.delivered_events.labels(name).inc(taken)
                        continue
                    failures += 1
                    rest_until = time.time() + self._backoff(max(failures, batch.attempts + 1))
                    cutoff = time.time() - self.give_up_after
                    if batch.events[0].timestamp < cutoff:
                        expired = await asyncio.to_thread(store.expire, name, cutoff)
                        self.dropped_events.labels(name, "expired").inc(expired)
                        log.warning("webhook events expired undelivered", extra={"fields": {
                            "event": "webhook_expired", "webhook": name, "events": expired,
                            "result": result}})
                    else:
                        await asyncio.to_thread(store.failed, batch, rest_until)
                    await self._observe(store, name)
                except STORE_ERRORS as error:
                    _log_store_error("webhook outbox not updated", error)
                log.warning("webhook request failed", extra={"fields": {
                    "event": "webhook_failed", "webhook": name, "result": result, "batch": batch.id,
                    "attempts": batch.attempts + 1, "retry_in": round(rest_until - time.time(), 1)}})
        finally:
            await session.close()

    @staticmethod
    def _tls_context(target: WebhookTarget) -> ssl.SSLContext:
        try:
            return tls_context(target.ca_file)
        except (OSError, ssl.SSLError) as error:
            # Fails closed: a receiver whose certificate needs that CA is refused (counted as tls_error).
            log.error("webhook CA file unusable, trusting the system's CAs only", extra={"fields": {
                "event": "webhook_ca_unusable", "webhook": target.name, "ca_file": str(target.ca_file),
                "error": type(error).__name__}})
            return tls_context(None)

    async def _post(self, session: aiohttp.ClientSession, target: WebhookTarget, key: bytes,
                    batch: Batch) -> str:
        body = encode_payload(batch.events, batch.created)
        now = int(time.time())
        headers = {"Content-Type": "application/json", "webhook-id": batch.id,
                   "webhook-timestamp": str(now), "webhook-signature": sign(key, batch.id, now, body)}
        try:
            async with session.post(target.url, data=body, headers=headers, allow_redirects=False) as answer:
                status = answer.status
        except aiohttp.ClientSSLError:
            return "tls_error"
        except TimeoutError:
            return "timeout"
        except (aiohttp.ClientError, OSError):
            return "connection_error"
        return "success" if 200 <= status < 300 else "http_error"

    def _backoff(self, attempt: int) -> float:
        """Seconds before attempt ``attempt + 1``: doubling from ``backoff_min`` up to ``backoff_max``,
        jittered down by up to half so that webhooks failing together do not retry together."""
        delay = min(self.backoff_max, self.backoff_min * 2.0 ** min(attempt - 1, 30))
        return delay * random.uniform(0.5, 1.0)  # noqa: S311 (spreading retries, not a secret)

    async def _observe(self, store: EventStore, name: str) -> None:
        count, oldest, dropped = await asyncio.to_thread(_outbox_state, store, name)
        self.pending_events.labels(name).set(count)
        self.oldest_pending.labels(name).set(max(0.0, time.time() - oldest) if oldest is not None else 0.0)
        seen = self._dropped_seen.get(name, 0)
        if dropped > seen:
            self.dropped_events.labels(name, "outbox_full").inc(dropped - seen)
        self._dropped_seen[name] = dropped


def _outbox_state(store: EventStore, name: str) -> tuple[int, float | None, int]:
    count, oldest = store.pending(name)
    return count, oldest, store.dropped(name)


def _log_store_error(message: str, error: BaseException) -> None:
    fields: dict[str, Any] = {"event": "event_store_error", "error": type(error).__name__}
    if isinstance(error, sqlite3.Error | StoreError):
        fields["detail"] = str(error)  # names the failure, never a row's content
    log.error(message, extra={"fields": fields})
