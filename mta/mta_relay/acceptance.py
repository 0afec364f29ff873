"""Submission steps shared by SMTP and HTTP: the MAIL FROM checks and durable acceptance, with the one
log line and the metrics every accepted or rejected message gets. ``accept`` is also where the trace and
standard header fields are added (``trace_headers``), so a message gets them whichever door it came in by.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from mta_relay import replies, trace_headers
from mta_relay.config import Credential
from mta_relay.events.record import Event, EventType, Response
from mta_relay.header_fields import header_values
from mta_relay.relay import Relay
from mta_relay.replies import Reply
from mta_relay.spool import Envelope, SpoolError

log = logging.getLogger("mta_relay.messages")
_HEADER_FIELDS = ("from", "sender", "date", "message-id")  # what check_headers and stamped read
Source = Literal["smtp", "http"]


def rejected(relay: Relay, source: Source, reply: Reply, **fields: Any) -> Reply:
    relay.metrics.rejected.labels(source, reply.reason).inc()
    log.info("message rejected", extra={"fields": {"event": "rejected", "source": source,
                                                    "reason": reply.reason, "reply": reply.smtp, **fields}})
    rejection_event(relay, source, reply, **fields)
    return reply


def rejection_event(relay: Relay, source: Source, reply: Reply, **fields: Any) -> None:
    """The Rejection event of a refusal that belongs to a credential (``credential`` in ``fields``);
    refusals before AUTH belong to nobody: logs only."""
    credential = fields.get("credential")
    if credential and relay.events is not None:
        relay.events.emit(Event(
            EventType.REJECTION, queue_id=fields.get("queue_id") or "", sender=fields.get("mail_from") or "",
            recipient=fields.get("rcpt") or "", credential=credential, cluster=relay.settings.cluster,
            mta=relay.pod_name or "", size=int(fields.get("size") or 0),
            response=Response.parse(reply.code, f"{reply.enhanced} {reply.text}"),
            source_address=fields.get("client_ip") or "",
            reception_protocol=source.upper(), reason=reply.reason))


def suppressed(relay: Relay, source: Source, cred: Credential, rcpt: str, **fields: Any) -> Reply | None:
    """RCPT: the recipient's suppression entry refuses it (``replies.SUPPRESSED``, a Suppressed event),
    unless the credential bypasses the list. None: go on."""
    store = relay.suppressions
    if store is None or cred.bypass_suppressions or not relay.settings.suppression.enabled:
        return None
    found = store.lookup(rcpt)
    if found is None:
        return None
    reply = replies.SUPPRESSED
    relay.metrics.rejected.labels(source, reply.reason).inc()
    log.info("recipient suppressed", extra={"fields": {
        "event": "rejected", "source": source, "reason": reply.reason, "reply": reply.smtp,
        "credential": cred.username, "rcpt": rcpt, "suppression_reason": found.reason, **fields}})
    if relay.events is not None:
        relay.events.emit(Event(
            EventType.SUPPRESSED, queue_id=fields.get("queue_id") or "", sender=fields.get("mail_from") or "",
            recipient=rcpt, credential=cred.username, cluster=relay.settings.cluster,
            mta=relay.pod_name or "",
            response=Response.parse(reply.code, f"{reply.enhanced} {reply.text}"),
            source_address=fields.get("client_ip") or "", reception_protocol=source.upper(),
            bounce_classification=found.reason, reason=reply.reason))
    return reply


async def check_sender(relay: Relay, cred: Credential, mail_from: str) -> Reply | None:
    """MAIL FROM: quota first (cheap, and a used-up quota is temporary), then the sender domain."""
    if await relay.ledger.exhausted(cred.username, cred.quota):
        return replies.QUOTA
    return await relay.gen.policy.check_sender(cred, mail_from, relay.gen.spf)


async def accept(relay: Relay, *, source: Source, cred: Credential, client_ip: str, queue_id: str,
                 mail_from: str, rcpts: list[str], message: bytes, smtputf8: bool,
                 protocol: str | None = None, helo: str | None = None) -> Reply | Envelope:
    """End of DATA: header domains, quota, then the spool. An Envelope means durable: answer 250.

    ``mail_from`` is ``""`` for the null sender. ``message`` is the client's message as received; what is
    spooled is that message with the relay's Received field and any missing Date / Message-ID
    (``trace_headers.stamp``). ``protocol`` is the Received field's ``with`` keyword and ``helo`` the
    client's EHLO name: SMTP passes both (``trace_headers.smtp_protocol``); HTTP leaves them out and gets
    ``HTTPS`` (or ``HTTP`` when the port has no TLS) and no EHLO name.
    """
    fields = {"queue_id": queue_id, "credential": cred.username, "client_ip": client_ip,
              "mail_from": mail_from, "rcpt_count": len(rcpts), "size": len(message)}
    present = header_values(message, *_HEADER_FIELDS)  # read once, for the policy and the stamp
    reply = await relay.gen.policy.check_headers(cred, message, relay.gen.spf, present)
    if reply is not None:
        return rejected(relay, source, reply, **fields)
    if not await relay.ledger.charge(cred.username, cred.quota):
        return rejected(relay, source, replies.QUOTA, **fields)
    settings = relay.settings
    if protocol is None:
        protocol = (trace_headers.http_protocol(settings.http.tls) if source == "http"
                    else trace_headers.smtp_protocol(tls=True, smtp_auth=cred.authentication == "Password"))
    arrival = trace_headers.Arrival(protocol=protocol, client_ip=client_ip, credential=cred.username,
                                    helo=helo, by_address=cred.authentication == "SourceIP")
    message, message_id = trace_headers.stamped(
        message, arrival, hostname=settings.hostname, queue_id=queue_id,
        client_address_shown=settings.trace.client_address, present=present)
    try:
        envelope = await relay.spool.put(queue_id=queue_id, mail_from=mail_from, rcpts=rcpts,
                                         credential=cred.username, client_ip=client_ip, source=source,
                                         smtputf8=smtputf8, message=message, message_id=message_id)
    except SpoolError as error:
        relay.ledger.refund(cred.username, cred.quota)
        relay.spool_ok = False
        log.error("spool write failed", extra={"fields": {"event": "spool_error", "error": str(error)}})
        return rejected(relay, source, replies.SPOOL_FAILED, **fields)
    relay.ledger.record_use(cred.username, client_ip)
    if relay.queued is not None:
        relay.queued(envelope.queue_id)
    relay.metrics.accepted.labels(source).inc()
    log.info("message accepted", extra={"fields": {"event": "accepted", "source": source, **fields}})
    if relay.events is not None:
        response = Response.parse(250, f"2.0.0 OK id={queue_id}")
        for rcpt in envelope.rcpts:
            relay.events.emit(Event(
                EventType.RECEPTION, queue_id=queue_id, sender=mail_from, recipient=rcpt,
                credential=cred.username, timestamp=envelope.received_at, created=envelope.received_at,
                message_id=message_id, cluster=settings.cluster, mta=relay.pod_name or "",
                size=envelope.size, response=response, source_address=client_ip, reception_protocol=protocol))
    return envelope
