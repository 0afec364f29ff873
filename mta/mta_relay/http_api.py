"""HTTP on its own port, in the relay's loop: ``POST /api/inject/v1``, ``/healthz``, ``/readyz``,
``/metrics``, and for the MTAs of the cluster and the operator ``POST /internal/v1/handoff``,
``POST /internal/v1/events``, ``GET /internal/v1/queue`` (see ``handoff``) and ``GET /internal/v1/usage``
(the quota counts, see ``usage``). The admin API
(``admin_api``) is added to the same app.

The injection API applies the SMTP policy with the same replies: Basic auth by the same credentials
(SourceIP credentials need no header), then source IP, sender domain, header domains, quota, spool.
Refusals are JSON ``{"error", "reason", "reply"}`` where ``reply`` is the SMTP reply SMTP would give:
401 bad or missing credentials, 403 not authorised, 400 malformed (with ``field``, the path of the field at
fault, e.g. ``recipients[3].email``), 413 too big, 429 temporary (quota,
throttling; Retry-After), 503 spool unavailable.

``/internal/v1/*`` take only ``Authorization: Bearer <peer token>`` (``handoff``), never an SMTP
credential, and the token opens nothing else. A hand-off is answered 200 only once the entry is durable
here (or was already here: idempotent by queue id); 400 names what is wrong with the body; 503 when the
spool cannot write it or this MTA is leaving itself.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import sqlite3
import time
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mta_relay import acceptance, handoff, inject_format, replies, usage
from mta_relay.authenticate import BASIC, authenticate, source_ip, suspended
from mta_relay.config import Credential
from mta_relay.events import from_config as events_config
from mta_relay.events.record import Event
from mta_relay.events.store import StoreError
from mta_relay.relay import Relay
from mta_relay.replies import Reply
from mta_relay.spool import Envelope, SpoolError, new_queue_id
from mta_relay.suppressions import exchange as suppression_exchange
from mta_relay.workers.metrics import merged as merged_metrics

log = logging.getLogger("mta_relay.http")
RELAY_KEY = web.AppKey("relay", Relay)
RECEIVING_KEY = web.AppKey("handoffs_in_progress", set[str])  # queue ids being stored right now


def _status(reply: Reply) -> int:
    if reply in (replies.AUTH_FAILED, replies.AUTH_REQUIRED):
        return 401
    if reply == replies.SPOOL_FAILED:
        return 503
    if reply.temporary:
        return 429
    if reply in (replies.TOO_BIG,):
        return 413
    if reply in (replies.BAD_MESSAGE, replies.NEEDS_SMTPUTF8):
        return 400
    return 403


def _error(reply: Reply, message: str | None = None) -> web.Response:
    headers = {"WWW-Authenticate": 'Basic realm="mta-relay"'} if _status(reply) == 401 else {}
    if _status(reply) == 429:
        headers["Retry-After"] = "60"
    body = {"error": message or reply.text, "reason": reply.reason, "reply": reply.smtp}
    return web.json_response(body, status=_status(reply), headers=headers)


def _basic(request: web.Request) -> tuple[str, bytes] | None:
    header = request.headers.get("Authorization", "")
    scheme, _, blob = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        username, sep, password = base64.b64decode(blob.strip(), validate=True).partition(b":")
    except (binascii.Error, ValueError):
        return None
    return (username.decode("utf-8", "replace"), password) if sep else None


async def _authenticate(relay: Relay, request: web.Request, ip: str) -> Credential | Reply:
    """The same path as SMTP AUTH (``authenticate``); no Authorization header: a SourceIP credential."""
    basic = _basic(request)
    if basic is None:
        cred = source_ip(relay, ip)
        if cred is not None and cred.suspended:
            return suspended(relay, cred, ip, source="http")
        return cred if cred is not None else replies.AUTH_REQUIRED
    username, password = basic
    return await authenticate(relay, username, password, ip, BASIC, source="http")


async def inject(request: web.Request) -> web.Response:
    relay = request.app[RELAY_KEY]
    if not relay.settings.http.inject:  # checked per request: a reload may turn it on or off
        return web.json_response({"error": "HTTP submission is off for this cluster"}, status=404)
    ip = request.remote or ""
    cred = await _authenticate(relay, request, ip)
    if isinstance(cred, Reply):
        return _error(acceptance.rejected(relay, "http", cred, client_ip=ip))
    limit = relay.settings.limits.max_message_size
    if request.content_length is not None and request.content_length > 2 * limit:
        return _error(replies.TOO_BIG)
    try:
        body = await request.read()  # capped by client_max_size: JSON and base64 inflate a message
    except web.HTTPRequestEntityTooLarge:
        return _error(replies.TOO_BIG)
    try:
        payload = inject_format.parse(body)
        prepared = inject_format.prepare(payload)
    except inject_format.BadRequest as error:
        return _bad_request(error)
    sender = payload.envelope_sender
    reply = await acceptance.check_sender(relay, cred, sender)
    if reply is not None:
        return _error(acceptance.rejected(relay, "http", reply, client_ip=ip, credential=cred.username,
                                          mail_from=sender))
    # KumoMTA's response: counts are of recipients; a recipient that gets no message is named in
    # failed_recipients with its error, and the request still answers 200 when any recipient got one.
    result: dict[str, Any] = {"success_count": 0, "fail_count": 0, "failed_recipients": [], "errors": []}
    last: Reply | None = None
    for outcome in inject_format.outcomes(prepared, limit=limit,
                                          max_recipients=relay.settings.limits.max_recipients):
        if isinstance(outcome, inject_format.Failed):
            failed, error_text, last = [outcome.rcpt], outcome.error, outcome.reply or last
        else:
            queue_id, rcpts = new_queue_id(), []
            for rcpt in outcome.rcpts:
                refused = acceptance.suppressed(relay, "http", cred, rcpt, client_ip=ip, queue_id=queue_id,
                                                mail_from=sender)
                if refused is None:
                    rcpts.append(rcpt)
                    continue
                result["fail_count"] += 1
                result["failed_recipients"].append(rcpt)
                result["errors"].append(f"{rcpt}: {refused.smtp}")
                last = refused
            if not rcpts:
                continue
            accepted = await acceptance.accept(
                relay, source="http", cred=cred, client_ip=ip, queue_id=queue_id, mail_from=sender,
                rcpts=rcpts, message=outcome.message, smtputf8=not all(r.isascii() for r in [sender, *rcpts]))
            if isinstance(accepted, Envelope):
                result["success_count"] += len(rcpts)
                continue
            failed, error_text, last = rcpts, accepted.smtp, accepted
        result["fail_count"] += len(failed)
        result["failed_recipients"].extend(failed)
        result["errors"].extend(f"{rcpt}: {error_text}" for rcpt in failed)
    if result["success_count"] == 0 and last is not None:
        return web.json_response({**result, "reason": last.reason, "reply": last.smtp}, status=_status(last))
    return web.json_response(result)


def _bad_request(error: inject_format.BadRequest) -> web.Response:
    """400 naming the field at fault (``field``, a path such as ``recipients[3].email``)."""
    reply = replies.BAD_MESSAGE
    return web.json_response({"error": f"bad request: {error}", "field": error.field, "reason": reply.reason,
                              "reply": reply.smtp}, status=400)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"alive": True})


async def readyz(request: web.Request) -> web.Response:
    checks = request.app[RELAY_KEY].readiness()
    ready = all(checks.values())
    return web.json_response({"ready": ready, **checks}, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    relay = request.app[RELAY_KEY]
    relay.count_spool_writes()
    data = generate_latest(relay.metrics.registry)
    if relay.worker_metrics is not None:  # the other SMTP serving processes' counts, summed
        data = merged_metrics(data, await relay.worker_metrics())
    if relay.delivery is not None:  # the delivery process's own metrics, one exposition
        data += (await relay.delivery.metrics_text()).encode()
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _peer_only(request: web.Request) -> web.Response | None:
    """401 unless the request carries the peer token (an SMTP credential is no peer token)."""
    relay = request.app[RELAY_KEY]
    if handoff.bearer_ok(request.headers.get("Authorization", ""), relay.peer_token):
        return None
    return web.json_response({"error": "peer token required"}, status=401,
                             headers={"WWW-Authenticate": 'Bearer realm="mta-relay-peers"'})


async def receive_handoff(request: web.Request) -> web.Response:
    refused = _peer_only(request)
    if refused is not None:
        return refused
    relay = request.app[RELAY_KEY]
    if relay.leaving:  # it would only have to pass it on again
        return web.json_response({"error": "this MTA is leaving"}, status=503)
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return web.json_response({"error": "entry too large"}, status=413)
    try:
        taken = handoff.decode(request.headers, body)
    except handoff.BadHandoff as error:
        return web.json_response({"error": str(error)}, status=400)
    env = taken.entry.envelope
    in_progress = request.app[RECEIVING_KEY]
    fields = {"queue_id": env.queue_id, "client_ip": request.remote or "", "rcpt_count": len(env.rcpts),
              "size": env.size}
    # A peer that did not get our 200 sends the entry again: one copy only.
    if env.queue_id in in_progress or relay.spool.slot_of(env.queue_id) is not None:
        relay.handoff_received.labels("duplicate").inc()
        log.info("hand-off already held", extra={"fields": {**fields, "event": "handoff_duplicate"}})
        return web.json_response({"queueId": env.queue_id, "result": "duplicate"})
    in_progress.add(env.queue_id)
    try:
        # Stored unsigned, as the spool always holds mail: DKIM signs at each delivery attempt.
        await relay.spool.put_entry(env, taken.entry.message)
        if taken.attempts:
            await asyncio.to_thread(relay.spool.record_retry, env.queue_id, taken.attempts, taken.next_at)
    except (SpoolError, OSError) as error:
        relay.spool_ok = False
        log.error("hand-off not stored", extra={"fields": {**fields, "event": "spool_error",
                                                            "error": type(error).__name__}})
        return web.json_response({"error": "spool cannot write"}, status=503)
    finally:
        in_progress.discard(env.queue_id)
    if relay.delivery is not None:
        relay.delivery.notify(env.queue_id, recorded=bool(taken.attempts))
    relay.handoff_received.labels("stored").inc()
    log.info("hand-off received", extra={"fields": {**fields, "event": "handoff_received",
                                                     "attempts": taken.attempts}})
    return web.json_response({"queueId": env.queue_id, "result": "stored"})


async def queue_status(request: web.Request) -> web.Response:
    """For the operator's scale-down: it lowers the replica count once a leaving MTA's depth is 0."""
    refused = _peer_only(request)
    if refused is not None:
        return refused
    relay = request.app[RELAY_KEY]
    handed_off, failures = await relay.delivery.handoff_status() if relay.delivery is not None else (0, 0)
    webhooks = await asyncio.to_thread(_webhook_backlog, relay)
    return web.json_response({"depth": await asyncio.to_thread(relay.spool.depth), "leaving": relay.leaving,
                              "handedOff": handed_off, "handoffFailures": failures,
                              "pendingEvents": sum(w["pending"] for w in webhooks.values()),
                              "webhooks": webhooks})


async def usage_report(request: web.Request) -> web.Response:
    """This MTA's own counts per credential, for its peers (the quota) and the operator (status)."""
    refused = _peer_only(request)
    if refused is not None:
        return refused
    relay = request.app[RELAY_KEY]
    body = usage.answer(relay, request.query, request.headers, relay.exchange)
    return web.Response(body=body, content_type="application/json")


async def suppression_changes(request: web.Request) -> web.Response:
    """The suppression list rows this MTA changed, for its peers (``suppressions.exchange``)."""
    refused = _peer_only(request)
    if refused is not None:
        return refused
    relay = request.app[RELAY_KEY]
    if relay.suppressions is None:
        return web.json_response({"error": "no suppression list on this MTA"}, status=404)
    body = await asyncio.to_thread(suppression_exchange.answer, relay.suppressions, relay.pod_name or "",
                                   dict(request.query))
    return web.Response(body=body, content_type="application/json")


def _webhook_backlog(relay: Relay) -> dict[str, dict[str, float]]:
    """Per webhook: events waiting, the age of the oldest (seconds, 0 when none), events dropped ever."""
    if not events_config.store_path(relay.config_dir, relay.settings).exists():
        return {}
    store = relay.event_store()
    found = {}
    now = time.time()
    for name in store.webhooks():
        pending, oldest = store.pending(name)
        found[name] = {"pending": pending, "oldestPendingAge": round(max(0.0, now - oldest), 1)
                       if oldest is not None else 0.0, "dropped": store.dropped(name)}
    return found


async def receive_events(request: web.Request) -> web.Response:
    """A leaving peer's events (``handoff``): stored once each, into the outboxes it names."""
    refused = _peer_only(request)
    if refused is not None:
        return refused
    relay = request.app[RELAY_KEY]
    if relay.leaving:
        return web.json_response({"error": "this MTA is leaving"}, status=503)
    try:
        events, outboxes = handoff.decode_events(await request.read())
    except handoff.BadHandoff as error:
        return web.json_response({"error": str(error)}, status=400)
    try:
        added = await asyncio.to_thread(_add_events, relay, events, outboxes)
    except (sqlite3.Error, OSError, StoreError) as error:
        log.error("handed-over events not stored", extra={"fields": {"event": "event_store_write_failed",
                                                                      "error": type(error).__name__}})
        return web.json_response({"error": "event store cannot write"}, status=503)
    log.info("events received", extra={"fields": {"event": "handoff_events_received", "events": len(events),
                                                   "added": added, "outboxes": outboxes,
                                                   "client_ip": request.remote or ""}})
    return web.json_response({"added": added})


def _add_events(relay: Relay, events: list[Event], outboxes: list[str]) -> int:
    return relay.event_store().add(events, outboxes)


def make_app(relay: Relay) -> web.Application:
    app = web.Application(client_max_size=2 * relay.settings.limits.max_message_size + 1)
    app[RELAY_KEY] = relay
    app[RECEIVING_KEY] = set()
    app.router.add_post("/api/inject/v1", inject)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_post(handoff.HANDOFF_PATH, receive_handoff)
    app.router.add_get(handoff.QUEUE_PATH, queue_status)
    app.router.add_get(usage.USAGE_PATH, usage_report)
    app.router.add_get(suppression_exchange.SUPPRESSIONS_PATH, suppression_changes)
    app.router.add_post(handoff.EVENTS_PATH, receive_events)
    return app
