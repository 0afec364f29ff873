"""The header fields the relay adds to every accepted message: one ``Received:`` trace field (RFC 5321
§4.4, RFC 5322 §3.6.7) prepended, and ``Date:`` / ``Message-ID:`` inserted at the end of the header
section when the message lacks them (RFC 6409 §8). Pure functions over bytes, no I/O; ``acceptance``
calls ``stamp`` for SMTP and HTTP alike, just before the spool write, so DKIM (signed later, at
delivery) covers what is added here.

Nothing else in the message changes: the new fields are spliced in as whole lines, existing fields are
neither re-folded nor reordered, and the body is not touched.

The ``with`` keyword is the RFC 3848 / RFC 6531 one for the session (``ESMTP`` plus ``S`` for TLS and
``A`` for SMTP AUTH; ``UTF8SMTP…`` for an SMTPUTF8 transaction). HTTP submission has no registered
keyword: it is written ``HTTPS`` (``HTTP`` without TLS), a valid RFC 5321 ``Attdl-Protocol`` atom, as
other submission APIs do. With ``trace.clientAddress: false`` the ``from`` clause (the client's EHLO name
and address) is left out, which RFC 5322's trace syntax allows and many submission services do for their
users' privacy; the credential's username stays, for abuse handling. No ``for`` clause: naming one of
several recipients would reveal a Bcc.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

from mta_relay.header_fields import header_end, header_values
from mta_relay.policy import client_address

# A domain (RFC 5321 ``Domain``; underscores tolerated, as in many real host names) or an address
# literal. Anything else a client sent as its EHLO name is not written: the header would not parse.
_DOMAIN = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
                     r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?")
_LITERAL = re.compile(r"\[(?:IPv6:[0-9A-Fa-f:.]+|[0-9.]+)\]")
_FOLD = b"\r\n\t"


@dataclass(frozen=True)
class Arrival:
    """How a message reached the relay: what its Received field records.

    ``protocol``: the ``with`` keyword (``smtp_protocol``, ``http_protocol``); ``helo``: the client's
    EHLO/HELO argument (None over HTTP); ``credential``: the username the message was accepted under;
    ``by_address``: the credential was taken from the source address (SourceIP), not SMTP AUTH.
    """

    protocol: str
    client_ip: str
    credential: str
    helo: str | None = None
    by_address: bool = False


def smtp_protocol(*, tls: bool, smtp_auth: bool, smtputf8: bool = False, extended: bool = True) -> str:
    """RFC 3848 (ESMTP, ESMTPS, ESMTPA, ESMTPSA) and RFC 6531 (UTF8SMTP…) ``with`` keywords."""
    base = "UTF8SMTP" if smtputf8 else ("ESMTP" if extended or tls or smtp_auth else "SMTP")
    return base + ("S" if tls else "") + ("A" if smtp_auth else "")


def http_protocol(tls: bool) -> str:
    return "HTTPS" if tls else "HTTP"


@functools.lru_cache(maxsize=4096)  # a client sends many messages: its address is parsed once
def address_literal(ip: str) -> str:
    """RFC 5321 §4.1.3: ``[192.0.2.1]``, ``[IPv6:2001:db8::1]`` (IPv4-mapped IPv6 as IPv4)."""
    try:
        address = client_address(ip)
    except ValueError:
        return "[unknown]"  # not an IP (a test transport, a Unix socket): nothing better to say
    return f"[IPv6:{address.compressed}]" if isinstance(address, ipaddress.IPv6Address) else f"[{address}]"


def _helo_name(helo: str | None) -> str | None:
    if helo is None or len(helo) > 255:
        return None
    return helo if _DOMAIN.fullmatch(helo) or _LITERAL.fullmatch(helo) else None


class _DateText:
    """``format_datetime`` of the last second asked for: every message of a second shares its text.
    The (second, text) pair is replaced whole, so threads never see one without the other."""

    def __init__(self) -> None:
        self._last: tuple[datetime, str] | None = None

    def __call__(self, when: datetime) -> str:
        second = when.replace(microsecond=0)
        last = self._last
        if last is not None and last[0] == second and last[0].tzinfo == second.tzinfo:
            return last[1]
        text = format_datetime(second)
        self._last = (second, text)
        return text


_date_text = _DateText()


def received(arrival: Arrival, *, hostname: str, queue_id: str, when: datetime,
             client_address_shown: bool = True) -> bytes:
    """The Received field, folded at its clauses so every line stays short; ends with CRLF."""
    parts: list[str] = []
    if client_address_shown:
        literal = address_literal(arrival.client_ip)
        parts.append(f"from {_helo_name(arrival.helo) or literal} ({literal})")
    parts.append(f"by {hostname} with {arrival.protocol} id {queue_id}")
    how = "by source address " if arrival.by_address else ""
    parts.append(f"(authenticated {how}as {arrival.credential});")
    parts.append(_date_text(when))
    return b"Received: " + _FOLD.join(part.encode("ascii") for part in parts) + b"\r\n"


def missing_fields(message: bytes, *, hostname: str, queue_id: str, when: datetime) -> bytes:
    """``Date`` and ``Message-ID`` lines for whichever of the two the message lacks (RFC 6409 §8)."""
    return _missing(header_values(message, "date", "message-id"), hostname=hostname, queue_id=queue_id,
                    when=when)


def _own_message_id(queue_id: str, hostname: str) -> str:
    return f"<{queue_id}@{hostname}>"


def _missing(present: dict[str, list[str]], *, hostname: str, queue_id: str, when: datetime) -> bytes:
    lines = b""
    if not present["date"]:
        lines += b"Date: " + _date_text(when).encode("ascii") + b"\r\n"
    if not present["message-id"]:
        lines += f"Message-ID: {_own_message_id(queue_id, hostname)}\r\n".encode("ascii")
    return lines


def stamp(message: bytes, arrival: Arrival, *, hostname: str, queue_id: str,
          client_address_shown: bool = True, when: datetime | None = None) -> bytes:
    """The message as spooled: Received first, missing Date/Message-ID at the end of the header section,
    every original byte kept in order."""
    return stamped(message, arrival, hostname=hostname, queue_id=queue_id,
                   client_address_shown=client_address_shown, when=when)[0]


def stamped(message: bytes, arrival: Arrival, *, hostname: str, queue_id: str,
            client_address_shown: bool = True, when: datetime | None = None,
            present: dict[str, list[str]] | None = None) -> tuple[bytes, str]:
    """``stamp``, and the message's Message-ID (the client's, or the one added), for events.
    ``present``: the message's ``header_values`` for (at least) date and message-id, when the caller
    has read them already."""
    when = when or datetime.now(UTC)
    trace = received(arrival, hostname=hostname, queue_id=queue_id, when=when,
                     client_address_shown=client_address_shown)
    if present is None:
        present = header_values(message, "date", "message-id")
    added = _missing(present, hostname=hostname, queue_id=queue_id, when=when)
    ids = present["message-id"]
    message_id = ids[0].strip()[:998] if ids else _own_message_id(queue_id, hostname)
    if not added:
        return trace + message, message_id
    end = header_end(message)
    head = message[:end]
    if head and not head.endswith((b"\n", b"\r")):
        head += b"\r\n"  # a message that is one unterminated header line: end it before adding ours
    return trace + head + added + message[end:], message_id
