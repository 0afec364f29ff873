"""The event record: the one wire format of a delivery event, in the JSON log line, the local store,
the webhook payloads and ``kubectl mta messages``.

The shape follows KumoMTA's log record where one exists (``type``, ``id``, ``sender``, ``recipient``,
``timestamp``, ``created``, ``size``, ``num_attempts``, ``response`` with ``code``/``enhanced_code``/
``content``, ``peer_address``, ``tls_protocol_version``, ``tls_cipher``, ``bounce_classification``,
``reception_protocol``, ``delivery_protocol``), so that tools written for its logs read ours. Ours adds
``event_id`` (unique per event: the webhook dedup key), ``message_id``, ``credential``, ``cluster``,
``mta``, ``source_address`` (the submitting client), ``bounce_kind`` (hard or soft) and ``tls_policy``
(the outbound TLS policy applied to the hop: none, opportunistic, required, mta-sts-enforce,
mta-sts-testing, dane; ``delivery.hop_tls.Applied``).

Never a password, an AUTH blob or a message body: an event carries addresses, the credential's
username, reply lines and sizes.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol


class EventType(StrEnum):
    RECEPTION = "Reception"  # accepted: durable in the spool (one per recipient)
    DELIVERY = "Delivery"  # the next hop accepted it
    TRANSIENT_FAILURE = "TransientFailure"  # deferred: retried later
    BOUNCE = "Bounce"  # refused permanently by the next hop (or by us: no MX, ...)
    EXPIRATION = "Expiration"  # deferred past the max retry age
    REJECTION = "Rejection"  # refused at submission (SMTP reply or HTTP 4xx)
    SUPPRESSED = "Suppressed"  # a recipient refused at submission: it is on the suppression list
    ADMIN_BOUNCE = "AdminBounce"  # returned to the sender by an administrator (admin API): a DSN goes


ALL_TYPES: tuple[EventType, ...] = tuple(EventType)
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclass(frozen=True)
class EnhancedCode:
    cls: int
    subject: int
    detail: int

    def __str__(self) -> str:
        return f"{self.cls}.{self.subject}.{self.detail}"

    def to_json(self) -> dict[str, int]:
        return {"class": self.cls, "subject": self.subject, "detail": self.detail}


@dataclass(frozen=True)
class Response:
    """An SMTP reply: the next hop's for delivery events, ours for Reception and Rejection."""

    code: int
    content: str  # the text after the code (and after the enhanced code, when there is one)
    enhanced_code: EnhancedCode | None = None

    @classmethod
    def parse(cls, code: int, text: str) -> Response:
        """``text`` as a reply's text; a leading enhanced code of the same class is split off."""
        match = _ENHANCED.match(text)
        if match and match.group(1) == str(code)[0]:
            enhanced = EnhancedCode(*(int(g) for g in match.groups()))
            return cls(code, text[match.end():].strip(), enhanced)
        return cls(code, text.strip())

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "content": self.content,
                "enhanced_code": self.enhanced_code.to_json() if self.enhanced_code else None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Response:
        enhanced = data.get("enhanced_code")
        return cls(int(data["code"]), str(data.get("content", "")),
                   EnhancedCode(enhanced["class"], enhanced["subject"], enhanced["detail"]) if enhanced
                   else None)

    def __str__(self) -> str:
        return " ".join(str(p) for p in (self.code, self.enhanced_code, self.content) if p)


@dataclass(frozen=True)
class Event:
    type: EventType
    queue_id: str  # KumoMTA's ``id``: the spool entry
    sender: str  # envelope sender, "" for the null sender
    recipient: str  # one recipient; Rejection before RCPT: ""
    credential: str  # the SmtpCredential's username, "" when none authenticated (and for DSNs)
    timestamp: float = field(default_factory=time.time)  # when it happened (Unix)
    created: float = 0.0  # when the message was accepted (Unix); 0 for a Rejection
    message_id: str = ""
    cluster: str = ""
    mta: str = ""  # the pod that emitted the event
    size: int = 0
    num_attempts: int = 0  # delivery attempts so far, this one included
    response: Response | None = None
    peer_address: dict[str, str] | None = None  # {"name": host, "addr": ip} of the next hop
    source_address: str = ""  # the submitting client's address (Reception, Rejection)
    reception_protocol: str = ""  # ESMTP, ESMTPSA, HTTPS, ... (Reception)
    delivery_protocol: str = ""  # ESMTP (delivery events)
    tls_protocol_version: str = ""  # of the hop this event is about
    tls_cipher: str = ""
    tls_policy: str = ""  # the outbound TLS policy applied to that hop (delivery events)
    bounce_classification: str = ""  # a ``classify`` category, for Bounce, TransientFailure, Expiration
    bounce_kind: str = ""  # "hard" or "soft", alongside the classification
    reason: str = ""  # our reason string (replies.Reply.reason) for Rejection; the one given for AdminBounce
    event_id: str = field(default_factory=lambda: new_event_id())

    def to_json(self) -> dict[str, Any]:
        # A copy of the instance dict (the fields, in their order), not dataclasses.asdict, which
        # deep-copies recursively (~10x), nor a getattr per field (4x): twice per event (log line, row).
        data = self.__dict__.copy()
        del data["type"], data["queue_id"], data["response"], data["peer_address"]
        data["type"] = str(self.type)
        data["id"] = self.queue_id
        data["response"] = self.response.to_json() if self.response else None
        data["peer_address"] = dict(self.peer_address) if self.peer_address else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        fields = dict(data)
        fields["queue_id"] = fields.pop("id")
        fields["type"] = EventType(fields["type"])
        fields["response"] = Response.from_json(fields["response"]) if fields.get("response") else None
        return cls(**fields)


def new_event_id() -> str:
    """Time-ordered and unique: 16 hex digits of nanoseconds, then 10 random."""
    return f"{time.time_ns():016x}{os.urandom(5).hex()}"


class EventSink(Protocol):
    """Where events go: ``store.EventWriter`` (log line, local store, webhook outboxes). ``emit`` never
    blocks and never raises: events must not slow mail down."""

    def emit(self, event: Event) -> None: ...
