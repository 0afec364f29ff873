"""The queue runner: schedules spooled messages for delivery, records outcomes, retries and bounces.

The relay starts one ``QueueRunner`` after ``Spool.recover()`` and before serving, calls ``notify`` after
each 250, and ``drain`` on SIGTERM. The spool is the only durable state (see docs/delivery.md):

- every complete entry in the spool is scheduled on start, so nothing acknowledged is lost;
- a recipient's final outcome is written (fsync) right after the next hop answers; an entry whose
  recipients are all final is removed. A crash between a next hop's 250 and that write is the one
  window in which a message can be delivered twice;
- a deferral records the entry's attempt count, next attempt time (wall clock) and the replies that
  deferred its recipients on the spool (``Spool.record_retry``) before it is rescheduled; on start each
  entry is scheduled at its recorded time (converted to the monotonic clock), its backoff continues from
  the recorded count and its last replies are shown again. An entry never deferred is due at once. The
  max retry age counts from acceptance (``Envelope.received_at``);
- the rate-limit window is saved to ``state/ratelimit.json`` (``state_files``) at most about once a
  second while it changes and at stop, and loaded on start (see ``ratelimit`` for what a crash loses);
- mail whose destination is over its shaping limits or suspended (``delivery.shaping``) is parked per
  destination, not rescheduled: it costs nothing while it waits, counts no failed try, and is released
  as the destination gets room (a connection freed, its rate window or suspension ends), as many at a
  time as it can take. Parking is in memory: after a restart such mail is simply due again.
- recipients a suspension holds (``delivery.holds``: their domain, or the credential that sent them) are
  left out of attempts; an entry with nothing else to try is parked, out of the schedule, until a resume
  releases it. A held recipient is never bounced or expired for being held. ``delivery.queue_control``
  answers the admin API's queue operations with the methods under "administration".
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mta_relay.delivery.backoff import RetryPolicy
from mta_relay.delivery.client import wire_form
from mta_relay.delivery.holds import Holds
from mta_relay.delivery.metrics import QUEUE_STATES, DeliveryMetrics, QueueSnapshot
from mta_relay.delivery.outcome import RecipientOutcome, Result
from mta_relay.delivery.router import Deliverer
from mta_relay.delivery.shaping import SuspensionEnded, SuspensionStarted
from mta_relay.dkim_sign import DkimSigner
from mta_relay.dsn import build_dsn
from mta_relay.events.classify import classify as classify_reply
from mta_relay.events.record import Event, EventSink, EventType, Response
from mta_relay.ratelimit import SlidingWindowLimit
from mta_relay.spool import CorruptEntry, RetryState, Spool, SpoolEntry, SpoolError, Status
from mta_relay.state_files import Debounced, decode_rate_window, encode_rate_window, load
from mta_relay.suppressions.bounces import BounceSuppressor

log = logging.getLogger("mta_relay.queue")
INLINE_BYTES = 64 << 10  # messages up to this size are prepared for the wire on the event loop
ADMIN_BOUNCE_CODE = 550
ADMIN_BOUNCE_TEXT = "5.0.0 Returned by the MTA's administrator"  # then ": <the reason given>"


class InFlight(Exception):
    """An administration action on an entry being delivered right now: ask again in a moment."""


@dataclass(frozen=True)
class QueueSettings:
    reporting_mta: str  # this MTA's host name, for DSNs
    concurrency: int = 20  # messages in delivery at once
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    rate_limit: tuple[int, float] | None = None  # (messages, period seconds) per MTA; None = unlimited
    drain_margin: float = 2.0  # seconds before the drain deadline at which delivery stops
    credential_metrics: bool = False  # per-credential series (events.credentialMetrics)


class QueueRunner:
    def __init__(self, spool: Spool, deliverer: Deliverer, settings: QueueSettings, *,
                 signer: DkimSigner | None = None, metrics: DeliveryMetrics | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 rng: random.Random | None = None, rate_window_file: Path | None = None,
                 holds: Holds | None = None) -> None:
        """``rate_window_file``: where the rate-limit window is kept across restarts (None: in memory);
        ``holds``: the suspensions in force (loaded before ``start``, so nothing held goes out)."""
        self.spool, self.deliverer, self.settings = spool, deliverer, settings
        self.signer = signer
        self.metrics = metrics or DeliveryMetrics()
        self._clock, self._wall = clock, wall
        self._rng = rng or random.Random()  # noqa: S311 - retry jitter, not security
        self._limit = SlidingWindowLimit(*settings.rate_limit) if settings.rate_limit else None
        self._heap: list[tuple[float, int, str]] = []
        self._due_at: dict[str, float] = {}  # queue id → its live heap entry's time
        self._seq = itertools.count()
        self._received: dict[str, float] = {}  # queue id → acceptance (Unix time), for the oldest age
        self._failures: dict[str, int] = {}
        self.holds = holds or Holds()
        # Entries whose every pending recipient is held: queue id → (credential, those recipients)
        self._set_aside: dict[str, tuple[str, tuple[str, ...]]] = {}
        # Recipient → (the reply that deferred it last, when), per entry; on the spool in its retry record.
        self._replies: dict[str, dict[str, tuple[str, float]]] = {}
        self._inflight: dict[str, asyncio.Task[Any]] = {}
        self._settling: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()  # the scheduler has something new to look at
        self._progress = asyncio.Event()  # an attempt finished (drain watches this)
        self._task: asyncio.Task[None] | None = None
        self._held = False  # the rate limit is holding due mail (counted once per hold)
        self._paused = False  # hand-off: no new attempts (see pause)
        self._stopping = False
        self._window_file = rate_window_file
        self._window_saver = (Debounced(rate_window_file, self._encode_window)
                              if rate_window_file is not None else None)
        self.events: EventSink | None = None  # the delivery process sets it (``events.store``)
        self.suppressor: BounceSuppressor | None = None  # hard bounces → the suppression list
        self.origin = ("", "")  # (cluster, MTA) named in events
        # Shaping: destination key → queue ids parked until it has room; ids released and not started yet.
        self._parked: dict[str, deque[str]] = {}
        self._releasing: dict[str, str] = {}  # queue id → the key it was released for
        self._watch_shaper(deliverer)

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Schedule every complete entry in the spool (at its recorded next attempt, if it was deferred
        before a restart), restore the rate window, and start delivering."""
        if self._limit is not None and self._window_file is not None:
            starts = await asyncio.to_thread(load, self._window_file, decode_rate_window, [])
            self._limit.restore(starts, self._clock(), self._wall())
        for queue_id, state in await asyncio.to_thread(self._retry_states):
            self._schedule_recorded(queue_id, state)
        self.metrics.watch_queue(self.snapshot)
        self._task = asyncio.create_task(self._run(), name="queue-runner")

    def _retry_states(self) -> list[tuple[str, RetryState | None]]:
        # Only entries with an outcomes file can have a retry record: no file look-up for the others.
        return [(qid, self.spool.retry_state(qid) if self.spool.has_outcomes(qid) else None)
                for qid in self.spool.queue_ids()]

    async def notify_recorded(self, queue_id: str) -> None:
        """Like ``notify``, for an entry whose retry record may be on the spool (one a peer handed over):
        scheduled at its recorded next attempt, its backoff continuing from the recorded count."""
        if queue_id not in self._inflight and queue_id not in self._due_at \
                and queue_id not in self._set_aside:
            self._schedule_recorded(queue_id, await asyncio.to_thread(self.spool.retry_state, queue_id))

    def _schedule_recorded(self, queue_id: str, state: RetryState | None) -> None:
        now = self._clock()
        if state is None:
            self._schedule(queue_id, now)
            return
        self._failures[queue_id] = state.attempts
        if state.replies:
            self._replies[queue_id] = dict(state.replies)
        self._schedule(queue_id, now + max(0.0, state.next_at - self._wall()))

    def notify(self, queue_id: str) -> None:
        """A new entry was made durable, or the front door hands over an entry found at start: deliver it
        as soon as limits allow, or at its recorded next attempt if it was deferred before a restart."""
        if queue_id in self._inflight or queue_id in self._due_at or queue_id in self._set_aside:
            return
        if self.spool.has_outcomes(queue_id):  # never for a new message: no file look-up on that path
            self._background(self.notify_recorded(queue_id))
        else:
            self._schedule(queue_id, self._clock())

    async def drain(self, deadline: float) -> None:
        """Keep delivering until nothing is due or in flight, or ``drain_margin`` before ``deadline``
        (a ``clock()`` time); then stop. Whatever is left stays in the spool for the next start."""
        stop_at = deadline - self.settings.drain_margin
        log.info("draining", extra={"fields": {"event": "draining", "in_flight": len(self._inflight),
                                               "queued": len(self._due_at)}})
        while self._clock() < stop_at and (self._inflight or self._due_count(self._clock())):
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(0.25, stop_at - self._clock())):
                    await self._progress.wait()
        await self.stop()

    async def stop(self) -> None:
        """Stop at once: in-flight transactions are cut off (the next hop discards a message whose
        DATA did not end), outcomes already received are still written."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for task in list(self._inflight.values()):
            task.cancel()
        await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        await asyncio.gather(*self._settling, return_exceptions=True)
        if self._window_saver is not None:
            await self._window_saver.flush()
        await self.deliverer.pool.close()
        self.metrics.unwatch_queue()
        log.info("delivery stopped", extra={"fields": {"event": "delivery_stopped",
                                                       "left": len(self._due_at)}})

    def reconfigure(self, deliverer: Deliverer, signer: DkimSigner | None, settings: QueueSettings) -> None:
        """A new config generation: attempts from now on use its route, keys and limits."""
        old, self.deliverer = self.deliverer, deliverer
        self._watch_shaper(deliverer)
        self.signer = signer
        if settings.rate_limit != self.settings.rate_limit:
            # A changed limit keeps the starts already made: a reload must not open a fresh window.
            starts = self._limit.starts if self._limit is not None else ()
            self._limit = SlidingWindowLimit(*settings.rate_limit, starts) if settings.rate_limit else None
        self.settings = settings
        if old is not deliverer:
            self._background(old.pool.close())
        self._wake.set()

    def _watch_shaper(self, deliverer: Deliverer) -> None:
        shaper = getattr(deliverer, "shaper", None)
        if shaper is not None:
            shaper.on_free = self._wake.set  # a connection came free: parked mail may go
            shaper.on_suspend = self._throttle_suspended
            shaper.on_end = self._suspension_ended

    def _throttle_suspended(self, started: SuspensionStarted) -> None:
        # By rule name: a label bounded by the rule table, where a destination key would name domains.
        self.metrics.throttle_suspensions.labels(started.rule).inc()
        log.warning("destination suspended after a throttle reply", extra={"fields": started.log_fields()})

    def _suspension_ended(self, ended: SuspensionEnded) -> None:
        log.info("destination takes mail again", extra={"fields": ended.log_fields()})

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    # --- scheduling ------------------------------------------------------------------------------
    def _schedule(self, queue_id: str, when: float) -> None:
        self._received.setdefault(queue_id, accepted_at(queue_id))
        self._due_at[queue_id] = when
        heapq.heappush(self._heap, (when, next(self._seq), queue_id))
        self._wake.set()

    def _next_due(self, now: float) -> str | None:
        """The queue id at the head of the schedule if it is due; stale heap entries are dropped."""
        while self._heap and self._heap[0][0] <= now:
            when, _seq, queue_id = self._heap[0]
            if self._due_at.get(queue_id) == when:
                return queue_id
            heapq.heappop(self._heap)  # superseded by a later _schedule
        return None

    def _due_count(self, now: float) -> int:
        return sum(1 for when in self._due_at.values() if when <= now)

    async def _run(self) -> None:
        # The flag as well as the cancel: Python 3.11's wait primitives can swallow a cancellation that
        # races with the event being set, and the loop must not outlive stop().
        while not self._stopping:
            self._wake.clear()
            now = self._clock()
            wait: float | None = self._unpark(now)
            while not self._paused and len(self._inflight) < self.settings.concurrency:
                queue_id = self._next_due(now)
                if queue_id is None:
                    break
                if self._limit is not None and not self._limit.try_acquire(now):
                    if not self._held:
                        self._held = True
                        self.metrics.held.inc()
                    wait = min(wait, self._limit.next_free(now) - now) if wait is not None \
                        else self._limit.next_free(now) - now
                    break
                self._held = False
                if self._window_saver is not None:
                    self._window_saver.changed()
                heapq.heappop(self._heap)
                del self._due_at[queue_id]
                self._start_attempt(queue_id)
            if self._heap and len(self._inflight) < self.settings.concurrency and not self._paused:
                head = max(0.0, self._heap[0][0] - now)
                wait = head if wait is None else min(wait, head)
            await self.deliverer.pool.reap()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(wait, 5.0) if wait is not None else 5.0):
                    await self._wake.wait()

    def _start_attempt(self, queue_id: str) -> None:
        self._track(queue_id, asyncio.create_task(self._attempt(queue_id), name=f"deliver-{queue_id}"))

    def _track(self, queue_id: str, task: asyncio.Task[Any]) -> None:
        """The entry is in flight until ``task`` ends: nothing else schedules or starts it meanwhile."""
        self._inflight[queue_id] = task

        def done(_task: asyncio.Task[Any]) -> None:
            if self._inflight.get(queue_id) is task:  # not an attempt started as this task ended
                del self._inflight[queue_id]
            self._releasing.pop(queue_id, None)
            self._wake.set()
            self._progress.set()
        task.add_done_callback(done)

    def snapshot(self) -> QueueSnapshot:
        now = self._clock()
        due = self._due_count(now)
        rate_limited = self._limit is not None and self._limit.next_free(now) > now
        shaped = sum(len(waiting) for waiting in self._parked.values())
        by_state = dict.fromkeys(QUEUE_STATES, 0)
        by_state["active"] = len(self._inflight)
        by_state["held" if rate_limited else "ready"] = due
        by_state["held"] += shaped
        by_state["deferred"] = len(self._due_at) - due
        by_state["suspended"] = len(self._set_aside)
        held = {"ratelimit": due if rate_limited else 0, "shaping": shaped, "suspended": len(self._set_aside)}
        shaper = getattr(self.deliverer, "shaper", None)
        oldest = min(self._received.values(), default=None)
        return QueueSnapshot(by_state, max(0.0, self._wall() - oldest) if oldest is not None else 0.0,
                             held_by_reason=held,
                             destinations_suspended=len(shaper.suspended()) if shaper is not None else 0,
                             suspensions={"domain": len(self.holds.domains),
                                          "credential": len(self.holds.credentials)})

    # --- hand-off on scale-down: no new attempts, entries leave for a peer ------------------------
    def pause(self) -> None:
        """Start no new attempts; those in flight finish and their entries are scheduled again as usual,
        ready for ``claim_idle``."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self._wake.set()

    @property
    def paused(self) -> bool:
        return self._paused

    def claim_idle(self) -> list[tuple[str, int, float]]:
        """Take every scheduled entry out of the schedule, for a hand-off: (queue id, failed attempts so
        far, next attempt as Unix time). An entry in flight is not scheduled, so never taken. Each one
        taken ends with ``handed_off``, ``give_back`` or ``drop_claim``."""
        now, wall = self._clock(), self._wall()
        claimed = [(queue_id, self._failures.get(queue_id, 0), wall + max(0.0, when - now))
                   for queue_id, when in self._due_at.items()]
        claimed += [(queue_id, self._failures.get(queue_id, 0), wall)
                    for waiting in self._parked.values() for queue_id in waiting]
        # Held mail goes too: the peers hold the same suspensions (kubectl mta queue asks every MTA).
        claimed += [(queue_id, self._failures.get(queue_id, 0), wall) for queue_id in self._set_aside]
        self._due_at.clear()  # the heap's entries for them are stale now and dropped as they come up
        self._parked.clear()
        self._set_aside.clear()
        return claimed

    def give_back(self, queue_id: str) -> None:
        """A claimed entry was not handed off (hand-off stopped): deliver it as usual, now."""
        if queue_id not in self._inflight:
            self._schedule(queue_id, self._clock())

    async def handed_off(self, queue_id: str) -> None:
        """A peer holds the claimed entry durably now: remove it here."""
        await asyncio.to_thread(self.spool.remove, queue_id)
        self._forget(queue_id)

    def drop_claim(self, queue_id: str) -> None:
        """A claimed entry is gone from the spool (removed, or quarantined as corrupt)."""
        self._forget(queue_id)

    # --- one attempt ------------------------------------------------------------------------------
    async def _attempt(self, queue_id: str) -> None:
        try:
            entry = await asyncio.to_thread(self.spool.read, queue_id)
        except FileNotFoundError:
            self._forget(queue_id)
            return
        except CorruptEntry as error:
            await asyncio.to_thread(self.spool.quarantine, queue_id)
            self.metrics.quarantined.inc()
            log.error("spool entry quarantined", extra={"fields": {
                "event": "quarantined", "queue_id": queue_id, "reason": str(error)}})
            self._forget(queue_id)
            return
        pending = (await asyncio.to_thread(self.spool.pending_rcpts, entry)
                   if self.spool.has_outcomes(queue_id) else list(entry.envelope.rcpts))
        held = [r for r in pending if self.holds.held(entry.envelope.credential, r)]
        if held:
            pending = [r for r in pending if r not in held]
            if not pending:
                self._put_aside(queue_id, entry.envelope.credential, held)
                return
        outcomes: list[RecipientOutcome] = []
        waits_for = getattr(self.deliverer, "waits_for", None)
        if pending and waits_for is not None and (key := waits_for(entry.envelope.mail_from, pending)):
            self._releasing.pop(queue_id, None)
            self._park(queue_id, key)  # its destinations have no room: not prepared, not tried
            return
        if pending:
            self.metrics.attempts.inc()
            try:
                message = (self._outgoing(entry.message) if self._cheap(entry.message)
                           else await asyncio.to_thread(self._outgoing, entry.message))
                self._releasing.pop(queue_id, None)  # from here the shaper counts it, if it starts
                outcomes = await self.deliverer.deliver(entry.envelope.mail_from, pending, message)
            except Exception:  # a bug must not strand the message: log it and try again later
                log.exception("delivery attempt failed", extra={"fields": {"event": "attempt_error",
                                                                           "queue_id": queue_id}})
                await self._retry_later(entry, [])
                return
        # Outcomes just received are written even if we are being stopped: that keeps the duplicate
        # window to the time of this write.
        settle = asyncio.create_task(self._settle(entry, outcomes, held))
        self._settling.add(settle)
        settle.add_done_callback(self._settling.discard)
        await asyncio.shield(settle)

    def _cheap(self, message: bytes) -> bool:
        """Small and unsigned: preparing it inline costs less than a hop to a worker thread."""
        return len(message) <= INLINE_BYTES and (self.signer is None or not self.signer.has_keys)

    def _outgoing(self, message: bytes) -> bytes:
        message = wire_form(message)
        return self.signer.sign(message) if self.signer else message

    async def _settle(self, entry: SpoolEntry, outcomes: list[RecipientOutcome],
                      held: list[str] | None = None) -> None:
        """``held``: recipients a suspension kept out of this attempt; they keep the entry queued."""
        env = entry.envelope
        age = self._wall() - env.received_at
        expired = self.settings.retry.expired(age)
        delivered = [o for o in outcomes if o.result is Result.DELIVERED]
        deferred = [o for o in outcomes if o.result is Result.DEFERRED]
        failed = [o for o in outcomes if o.result is Result.FAILED]
        for o in outcomes:
            if o.attempted:  # shaping's own holds are not next-hop answers
                self.metrics.results.labels(o.result.value, f"{str(o.code)[0]}xx").inc()
        if delivered:
            self.metrics.latency.observe(max(0.0, age))
        attempt = self._failures.get(env.queue_id, 0) + 1
        if expired and deferred:
            expiring, failed, deferred = deferred, failed + deferred, []
        else:
            expiring = []
        self._report(entry, attempt, delivered, EventType.DELIVERY)
        self._report(entry, attempt, [o for o in deferred if o.attempted], EventType.TRANSIENT_FAILURE)
        self._report(entry, attempt, [o for o in failed if o not in expiring], EventType.BOUNCE)
        self._report(entry, attempt, expiring, EventType.EXPIRATION)
        if deferred:
            replies = self._replies.setdefault(env.queue_id, {})
            replies.update((o.recipient, (_detail(o), self._wall())) for o in deferred)
        try:
            if delivered and (failed or deferred or held):  # the entry outlives this step: deliveries first
                await self._record(env.queue_id, delivered, "delivered")
            if failed:
                await self._bounce(entry, failed, expired)
            if not deferred and not held:
                await asyncio.to_thread(self.spool.remove, env.queue_id)
                self._forget(env.queue_id)
                return
            await self._record(env.queue_id, failed, "failed")
            if not deferred and held:  # only held recipients are left: nothing to retry until resumed
                self._put_aside(env.queue_id, env.credential, held)
                return
        except (OSError, SpoolError) as error:  # disk trouble: whatever was not recorded is tried again
            log.error("spool update failed", extra={"fields": {
                "event": "spool_error", "queue_id": env.queue_id, "error": type(error).__name__}})
        if all(o.held for o in deferred):  # waiting for its destination's room, not failing: park it
            self._park(env.queue_id, deferred[0].held)
            return
        await self._retry_later(entry, deferred)

    async def _record(self, queue_id: str, outcomes: list[RecipientOutcome], status: Status) -> None:
        for o in outcomes:
            await asyncio.to_thread(self.spool.record_outcome, queue_id, o.recipient, status, _detail(o))

    async def _retry_later(self, entry: SpoolEntry, deferred: list[RecipientOutcome]) -> None:
        env = entry.envelope
        failures = self._failures[env.queue_id] = self._failures.get(env.queue_id, 0) + 1
        delay = self.settings.retry.delay(failures, self._rng)
        until_expiry = env.received_at + self.settings.retry.max_age - self._wall()
        # The last try happens at the max retry age, so expiry is noticed then, not a backoff step later.
        wait = max(0.0, min(delay, until_expiry))
        replies = {o.recipient: _detail(o) for o in deferred}
        try:  # durable before it is scheduled, so a restart resumes this schedule (and shows the replies)
            await asyncio.to_thread(self.spool.record_retry, env.queue_id, failures, self._wall() + wait,
                                    replies)
        except (OSError, ValueError) as error:  # still retried here; a restart would try it at once
            log.error("retry record not written", extra={"fields": {
                "event": "spool_error", "queue_id": env.queue_id, "error": type(error).__name__}})
        self._schedule(env.queue_id, self._clock() + wait)
        log.info("delivery deferred", extra={"fields": {
            "event": "deferred", "queue_id": env.queue_id, "recipients": len(deferred),
            "attempt": failures, "retry_in": round(wait, 3),
            "reply": _detail(deferred[0]) if deferred else ""}})

    async def _bounce(self, entry: SpoolEntry, failed: list[RecipientOutcome], expired: bool,
                      by: str | None = None) -> None:
        """DSN first (durable in the spool), then the failures are recorded: a crash in between can
        repeat the DSN, never lose it. ``by``: the administrator who returned the mail (admin API)."""
        env = entry.envelope
        reason = "admin" if by is not None else "expired" if expired else "rejected"
        for o in failed:
            self.metrics.bounces.labels(reason).inc()
            log.warning("delivery failed permanently", extra={"fields": {
                "event": "bounced", "queue_id": env.queue_id, "recipient": o.recipient, "reason": reason,
                "status": o.status, "reply": _detail(o), "remote": o.remote, "dsn": bool(env.mail_from),
                **({"by": by} if by is not None else {})}})
        if not env.mail_from:  # never answer a bounce with a bounce
            return
        dsn = build_dsn(original=entry.message, envelope_sender=env.mail_from, failures=failed,
                        reporting_mta=self.settings.reporting_mta, queue_id=env.queue_id,
                        arrival=datetime.fromtimestamp(env.received_at, UTC), expired=expired)
        bounce = await self.spool.put(mail_from="", rcpts=[env.mail_from], credential="", client_ip="",
                                      source="smtp", smtputf8=not env.mail_from.isascii(), message=dsn)
        self.metrics.dsns.inc()
        self.notify(bounce.queue_id)

    def _report(self, entry: SpoolEntry, attempt: int, outcomes: list[RecipientOutcome],
                kind: EventType, reason: str = "") -> None:
        """Metrics and an event for each outcome of one kind (an AdminBounce is ours, not classified)."""
        env = entry.envelope
        cluster, mta = self.origin
        for o in outcomes:
            verdict = (classify_reply(o.code, o.text)
                       if kind not in (EventType.DELIVERY, EventType.ADMIN_BOUNCE) else None)
            self.metrics.events.labels(str(kind), verdict.kind if verdict else "",
                                       verdict.category if verdict else "").inc()
            if self.settings.credential_metrics and env.credential:
                self.metrics.by_credential.labels(env.credential, str(kind)).inc()
            if kind is EventType.BOUNCE and verdict is not None and self.suppressor is not None:
                self.suppressor.bounced(recipient=o.recipient, category=verdict.category, kind=verdict.kind,
                                        credential=env.credential, reply=_detail(o), now=self._wall())
            if self.events is None:
                continue
            self.events.emit(Event(
                kind, queue_id=env.queue_id, sender=env.mail_from, recipient=o.recipient,
                credential=env.credential, created=env.received_at, message_id=env.message_id,
                cluster=cluster, mta=mta, size=env.size, num_attempts=attempt,
                response=Response.parse(o.code, o.text),
                peer_address={"name": o.remote, "addr": o.address} if o.remote or o.address else None,
                delivery_protocol="ESMTP", tls_protocol_version=o.tls_version, tls_cipher=o.tls_cipher,
                tls_policy=o.tls_policy,
                bounce_classification=verdict.category if verdict else "",
                bounce_kind=verdict.kind if verdict else "", reason=reason))

    # --- shaping: mail parked per destination --------------------------------------------------
    def _park(self, queue_id: str, key: str) -> None:
        if self._stopping:
            return  # the spool keeps it; a restart finds it due
        self._parked.setdefault(key, deque()).append(queue_id)
        self._wake.set()

    def _unpark(self, now: float) -> float | None:
        """Release parked mail to destinations with room, as many as each can start; returns how long
        until a parked destination gets room by the clock (None: only a freed connection will do)."""
        shaper = getattr(self.deliverer, "shaper", None)
        wait: float | None = None
        for key, waiting in list(self._parked.items()):
            released = sum(1 for k in self._releasing.values() if k == key)
            room = (shaper.free(key, now) if shaper is not None else len(waiting)) - released
            while room > 0 and waiting:
                queue_id = waiting.popleft()
                self._releasing[queue_id] = key
                self._schedule(queue_id, now)
                room -= 1
            if not waiting:
                del self._parked[key]
                continue
            ready = shaper.ready_at(key, now) if shaper is not None else None
            if ready is not None:
                wait = max(0.0, ready - now) if wait is None else min(wait, max(0.0, ready - now))
        return wait

    def _encode_window(self) -> bytes:
        limit = self._limit
        return encode_rate_window(limit.wall_starts(self._clock(), self._wall()) if limit is not None else [])

    def _forget(self, queue_id: str) -> None:
        self._releasing.pop(queue_id, None)
        self._received.pop(queue_id, None)
        self._failures.pop(queue_id, None)
        self._set_aside.pop(queue_id, None)
        self._replies.pop(queue_id, None)

    def _put_aside(self, queue_id: str, credential: str, held: list[str]) -> None:
        self._received.setdefault(queue_id, accepted_at(queue_id))
        self._set_aside[queue_id] = (credential, tuple(held))
        log.debug("delivery held by a suspension", extra={"fields": {  # per entry: the action is logged
            "event": "suspended", "queue_id": queue_id, "recipients": len(held)}})

    # --- administration (the admin API's queue operations, see delivery.queue_control) --------------
    def queued(self) -> list[str]:
        """Every entry this runner holds: scheduled, in flight, waiting for its destination's room
        (shaping) or set aside by a suspension."""
        shaped = [queue_id for waiting in self._parked.values() for queue_id in waiting]
        return list(dict.fromkeys([*self._due_at, *self._inflight, *shaped, *self._set_aside]))  # once each

    def _shaped(self, queue_id: str) -> bool:
        return any(queue_id in waiting for waiting in self._parked.values())

    def _take_from_line(self, queue_id: str) -> bool:
        """Take an entry out of its destination's waiting line (shaping); False if it is in none."""
        for key, waiting in list(self._parked.items()):
            if queue_id in waiting:
                waiting.remove(queue_id)
                if not waiting:
                    del self._parked[key]
                return True
        return False

    def state(self, queue_id: str) -> str | None:
        """``in flight``, ``suspended`` (set aside), ``deferred`` (failed before, waiting to retry),
        ``queued`` (due, never tried yet, or waiting for its destination's room: shaping), or None for an
        entry the runner does not hold."""
        if queue_id in self._inflight:
            return "in flight"
        if queue_id in self._set_aside:
            return "suspended"
        if self._shaped(queue_id):
            return "queued"
        when = self._due_at.get(queue_id)
        if when is None:
            return None
        return "deferred" if self._failures.get(queue_id) and when > self._clock() else "queued"

    def attempts(self, queue_id: str) -> int:
        """Failed attempts so far."""
        return self._failures.get(queue_id, 0)

    def next_attempt(self, queue_id: str) -> float | None:
        """When the entry is tried next (Unix time); None when in flight, parked or unknown."""
        when = self._due_at.get(queue_id)
        return None if when is None else self._wall() + max(0.0, when - self._clock())

    def last_replies(self, queue_id: str) -> dict[str, tuple[str, float]]:
        """Recipient → (the reply that deferred it last, when): from this process's attempts, or from the
        entry's retry record when it was deferred before a restart."""
        return dict(self._replies.get(queue_id, {}))

    def retry_now(self, queue_id: str) -> str:
        """Try a scheduled entry now: ``retried``; or why not: ``in flight``, ``suspended``, ``unknown``."""
        state = self.state(queue_id)
        if state in ("queued", "deferred"):
            self._take_from_line(queue_id)  # tried now; shaping may park it again
            self._schedule(queue_id, self._clock())
            return "retried"
        return state or "unknown"

    def park(self, queue_id: str, credential: str, held: list[str]) -> bool:
        """Take a scheduled entry whose every pending recipient is held out of the schedule at once (a
        suspend), rather than at its next attempt."""
        if queue_id not in self._due_at:
            return False
        del self._due_at[queue_id]  # its heap entry is stale now
        self._put_aside(queue_id, credential, held)
        return True

    def release(self) -> list[str]:
        """After a resume: parked entries with a recipient no longer held are due now."""
        released = [queue_id for queue_id, (credential, held) in self._set_aside.items()
                    if not all(self.holds.held(credential, r) for r in held)]
        for queue_id in released:
            del self._set_aside[queue_id]
            self._schedule(queue_id, self._clock())
        return released

    async def admin_bounce(self, queue_id: str, pick: Callable[[list[str]], list[str]], reason: str,
                           by: str) -> list[str]:
        """Return the pending recipients ``pick`` chooses to the sender now: a DSN (never to the null
        sender) and an AdminBounce event each; the entry goes when nothing is left, else keeps its place.
        The recipients returned; InFlight while it is being delivered, LookupError if not held here."""
        if queue_id in self._inflight:
            raise InFlight(queue_id)
        due, parked = self._due_at.pop(queue_id, None), self._set_aside.pop(queue_id, None)
        shaped = self._take_from_line(queue_id)  # what is left is scheduled again: shaping parks it anew
        if due is None and parked is None and not shaped:
            raise LookupError(queue_id)
        work = asyncio.create_task(self._admin_bounce(queue_id, pick, reason, by, due, parked),
                                   name=f"bounce-{queue_id}")
        # Finished even if we are being stopped (stop() waits for what settles): a DSN sent and the
        # failures not recorded would return the mail and deliver it too after the restart.
        self._settling.add(work)
        work.add_done_callback(self._settling.discard)
        self._track(queue_id, asyncio.create_task(_wait(work)))  # in flight meanwhile
        return await asyncio.shield(work)

    async def _admin_bounce(self, queue_id: str, pick: Callable[[list[str]], list[str]], reason: str,
                            by: str, due: float | None, parked: tuple[str, tuple[str, ...]] | None
                            ) -> list[str]:
        try:
            entry = await asyncio.to_thread(self.spool.read, queue_id)
        except FileNotFoundError:
            self._forget(queue_id)
            return []
        except CorruptEntry:
            await asyncio.to_thread(self.spool.quarantine, queue_id)
            self.metrics.quarantined.inc()
            self._forget(queue_id)
            return []
        pending = (await asyncio.to_thread(self.spool.pending_rcpts, entry)
                   if self.spool.has_outcomes(queue_id) else list(entry.envelope.rcpts))
        chosen = [r for r in pick(pending) if r in pending]
        text = f"{ADMIN_BOUNCE_TEXT}: {reason}"
        failed = [RecipientOutcome(r, Result.FAILED, ADMIN_BOUNCE_CODE, text) for r in chosen]
        rest = [r for r in pending if r not in chosen]
        if failed:
            self._report(entry, self._failures.get(queue_id, 0), failed, EventType.ADMIN_BOUNCE, reason)
            try:
                await self._bounce(entry, failed, expired=False, by=by)
                if not rest:
                    await asyncio.to_thread(self.spool.remove, queue_id)
                    self._forget(queue_id)
                    return chosen
                await self._record(queue_id, failed, "failed")
            except (OSError, SpoolError) as error:  # as in _settle: what was not recorded stays queued
                log.error("spool update failed", extra={"fields": {
                    "event": "spool_error", "queue_id": queue_id, "error": type(error).__name__}})
                chosen = []
        if parked is not None:
            held = [r for r in rest if r in parked[1]]
            if held and len(held) == len(rest):
                self._set_aside[queue_id] = (parked[0], tuple(held))
                return chosen
        self._schedule(queue_id, due if due is not None else self._clock())
        return chosen


async def _wait(task: asyncio.Task[Any]) -> None:
    """Stands for ``task`` in the in-flight map: cancelling it leaves ``task`` running."""
    await asyncio.wait({task})


def accepted_at(queue_id: str) -> float:
    """Acceptance time (Unix) from a queue id: its first 16 hex digits are nanoseconds (see spool)."""
    return int(queue_id[:16], 16) / 1e9


def _detail(o: RecipientOutcome) -> str:
    return f"{o.code} {o.text}"
