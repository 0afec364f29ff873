"""The delivery process's side of queue administration: answers the front door's ``queue_*`` ops
(``queue_admin`` owns their shapes) from the queue runner it holds — list, show, retry, bounce, suspend,
resume — and logs every action with who asked. Each op runs as a task of its own, so a bounce waiting for
its DSN to be spooled (a request to the front door on the same channel) never blocks the channel's reader.

Envelopes are read from the entries' headers (``Spool.envelope``: no message bytes) and kept while the
entry is queued; recipients' outcomes come from the spool, attempts, next attempt and the last deferral
reply from the runner.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, cast

from mta_relay import queue_admin
from mta_relay.delivery.channel import Channel, Message
from mta_relay.queue import InFlight, QueueRunner
from mta_relay.queue_admin import BadParameter, Row, Selector, domain_of
from mta_relay.spool import FINAL, CorruptEntry, Envelope, Spool

log = logging.getLogger("mta_relay.queue_admin")
Looked = dict[str, tuple[Envelope, list[str]]]  # queue id → (envelope, recipients without a final outcome)


class QueueControl:
    def __init__(self, runner: QueueRunner, spool: Spool, mta: str,
                 wall: Callable[[], float] = time.time) -> None:
        self.runner, self.spool, self.mta, self._wall = runner, spool, mta, wall
        self._envelopes: dict[str, Envelope] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def handle(self, channel: Channel, request: Message) -> None:
        """Answer ``request`` on ``channel`` when done (``queue_answer``, with the request's id)."""
        task = asyncio.create_task(self._answer(channel, request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, channel: Channel, request: Message) -> None:
        channel.send({"op": queue_admin.REPLY, "id": request["id"], **await self.answer(request)})

    async def answer(self, request: Message) -> dict[str, Any]:
        """``{"status": <HTTP status>, "body": {...}}``; a bug is logged and answered 500, never raised."""
        handlers = {queue_admin.OP_LIST: self._list, queue_admin.OP_SHOW: self._show,
                    queue_admin.OP_RETRY: self._retry, queue_admin.OP_BOUNCE: self._bounce,
                    queue_admin.OP_SUSPEND: self._suspend, queue_admin.OP_RESUME: self._resume}
        try:
            status, body = await handlers[request["op"]](request)
        except BadParameter as error:
            status, body = 400, {"error": str(error)}
        except Exception:
            log.exception("queue administration failed", extra={"fields": {
                "event": "queue_admin_error", "op": request.get("op")}})
            status, body = 500, {"error": "the delivery process failed to answer (see its log)"}
        return {"status": status, "body": {"mta": self.mta, **body}}

    # --- reading the queue ------------------------------------------------------------------------
    async def _look(self, ids: list[str] | None = None) -> Looked:
        """The entries named (default: every one the runner holds) with their pending recipients; those
        gone meanwhile are left out."""
        wanted = self.runner.queued() if ids is None else ids
        return await asyncio.to_thread(self._read, wanted, ids is None)

    def _read(self, ids: list[str], everything: bool) -> Looked:
        envelopes = self._envelopes
        found: Looked = {}
        for queue_id in ids:
            envelope = envelopes.get(queue_id)
            if envelope is None:
                try:
                    envelope = self.spool.envelope(queue_id)
                except (FileNotFoundError, CorruptEntry, ValueError):
                    continue
                envelopes[queue_id] = envelope
            done = {r for r, o in self.spool.outcomes(queue_id).items() if o.status in FINAL}
            found[queue_id] = (envelope, [r for r in envelope.rcpts if r not in done])
        if everything:  # forget the envelopes of entries no longer queued
            self._envelopes = {q: envelopes[q] for q in found}
        return found

    def _held(self, envelope: Envelope, recipients: list[str]) -> bool:
        return bool(recipients) and all(self.runner.holds.held(envelope.credential, r) for r in recipients)

    async def _list(self, request: Message) -> tuple[int, dict[str, Any]]:
        looked = await self._look()
        rows: list[Row] = []
        for queue_id, (envelope, pending) in looked.items():
            state = self.runner.state(queue_id)
            if state is None or not pending:
                continue
            by_domain: dict[str, list[str]] = {}
            for rcpt in pending:
                by_domain.setdefault(domain_of(rcpt), []).append(rcpt)
            for domain, rcpts in by_domain.items():
                if state == "in flight":
                    shown = state
                elif self._held(envelope, rcpts):
                    shown = "suspended"
                else:  # a parked entry's other recipients wait for the release a resume makes
                    shown = "queued" if state == "suspended" else state
                rows.append(Row(domain, cast(queue_admin.State, shown), envelope.received_at))
        return 200, {"messages": len(looked), "summary": queue_admin.summarize(rows, self._wall()),
                     "suspensions": self.runner.holds.to_json()}

    async def _show(self, request: Message) -> tuple[int, dict[str, Any]]:
        queue_id = queue_admin.check_queue_id(str(request.get("qid", "")))
        state = self.runner.state(queue_id)
        looked = await self._look([queue_id]) if state is not None else {}
        if queue_id not in looked:
            return 404, {"error": f"queue id {queue_id} is not queued on this MTA"}
        envelope, _pending = looked[queue_id]
        outcomes = await asyncio.to_thread(self.spool.outcomes, queue_id)
        replies = self.runner.last_replies(queue_id)
        attempts = self.runner.attempts(queue_id)
        recipients = []
        for rcpt in envelope.rcpts:
            outcome = outcomes.get(rcpt)
            if outcome is not None and outcome.status in FINAL:
                recipients.append({"recipient": rcpt, "state": outcome.status, "reply": outcome.detail,
                                   "at": outcome.at})
                continue
            if state == "in flight":
                shown = "in flight"
            elif self.runner.holds.held(envelope.credential, rcpt):
                shown = "suspended"
            else:
                shown = "deferred" if attempts else "queued"
            reply, at = replies.get(rcpt, ("", None))
            recipients.append({"recipient": rcpt, "state": shown, "reply": reply, "at": at})
        return 200, {"id": queue_id, "state": state, "attempts": attempts,
                     "next_attempt": self.runner.next_attempt(queue_id),
                     "envelope": {"sender": envelope.mail_from, "recipients": list(envelope.rcpts),
                                  "credential": envelope.credential, "client_ip": envelope.client_ip,
                                  "received_at": envelope.received_at, "source": envelope.source,
                                  "size": envelope.size, "message_id": envelope.message_id,
                                  "smtputf8": envelope.smtputf8},
                     "recipients": recipients}

    async def _matching(self, selector: Selector) -> Looked:
        looked = await self._look([selector.value] if selector.by == "id" else None)
        return {q: (envelope, pending) for q, (envelope, pending) in looked.items()
                if pending and selector.matches(q, envelope.mail_from, pending)}

    # --- actions ----------------------------------------------------------------------------------
    async def _retry(self, request: Message) -> tuple[int, dict[str, Any]]:
        selector, by = queue_admin.selector_of(request), str(request.get("by", ""))
        matched = await self._matching(selector)
        if selector.by == "id" and not matched:
            return 404, {"error": f"queue id {selector.value} is not queued on this MTA"}
        found: dict[str, list[str]] = {"retried": [], "in flight": [], "suspended": []}
        for queue_id in matched:
            result = self.runner.retry_now(queue_id)
            if result in found:
                found[result].append(queue_id)
        log.info("queue retry", extra={"fields": {
            "event": "queue_retry", "selector": str(selector), "retried": len(found["retried"]),
            "in_flight": len(found["in flight"]), "suspended": len(found["suspended"]), "by": by}})
        return 200, {"retried": found["retried"], "in_flight": found["in flight"],
                     "suspended": found["suspended"]}

    async def _bounce(self, request: Message) -> tuple[int, dict[str, Any]]:
        selector, by = queue_admin.selector_of(request), str(request.get("by", ""))
        reason = queue_admin.parse_reason(request)
        matched = await self._matching(selector)
        if selector.by == "id" and not matched:
            return 404, {"error": f"queue id {selector.value} is not queued on this MTA"}
        bounced: list[dict[str, Any]] = []
        in_flight: list[str] = []
        for queue_id, (envelope, _pending) in matched.items():
            try:
                recipients = await self.runner.admin_bounce(queue_id, selector.recipients, reason, by)
            except InFlight:
                in_flight.append(queue_id)
                continue
            except LookupError:  # delivered or handed off meanwhile
                continue
            if recipients:
                bounced.append({"id": queue_id, "recipients": recipients, "dsn": bool(envelope.mail_from)})
        log.warning("queue bounce", extra={"fields": {
            "event": "queue_bounce", "selector": str(selector), "reason": reason, "messages": len(bounced),
            "recipients": sum(len(b["recipients"]) for b in bounced), "in_flight": len(in_flight), "by": by}})
        if selector.by == "id" and in_flight:
            return 409, {"error": f"queue id {selector.value} is being delivered right now: try again in a "
                                  "moment", "bounced": [], "in_flight": in_flight}
        return 200, {"bounced": bounced, "in_flight": in_flight}

    async def _suspend(self, request: Message) -> tuple[int, dict[str, Any]]:
        target, by = queue_admin.target_of(request), str(request.get("by", ""))
        try:
            changed = await self.runner.holds.suspend(target, by, self._wall())
        except OSError as error:
            return 503, {"error": f"the suspension could not be saved on the MTA's volume: {error.strerror}"}
        held = 0
        for queue_id, (envelope, pending) in (await self._look()).items():
            if self._held(envelope, pending) and self.runner.park(queue_id, envelope.credential, pending):
                held += 1
        log.warning("queue suspended", extra={"fields": {
            "event": "queue_suspend", **target.to_json(), "changed": changed, "held": held, "by": by}})
        return 200, {"suspended": target.to_json(), "changed": changed, "held": held,
                     "suspensions": self.runner.holds.to_json()}

    async def _resume(self, request: Message) -> tuple[int, dict[str, Any]]:
        target, by = queue_admin.target_of(request), str(request.get("by", ""))
        try:
            hold = await self.runner.holds.resume(target)
        except OSError as error:
            return 503, {"error": f"the resume could not be saved on the MTA's volume: {error.strerror}"}
        released = self.runner.release()
        log.warning("queue resumed", extra={"fields": {
            "event": "queue_resume", **target.to_json(), "changed": hold is not None,
            "released": len(released), "by": by}})
        return 200, {"resumed": target.to_json(), "changed": hold is not None, "released": len(released),
                     "suspensions": self.runner.holds.to_json()}
