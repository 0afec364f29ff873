"""Delivery status notifications (RFC 3464) for mail that failed permanently or expired.

The DSN is a multipart/report: a human explanation, the machine-readable message/delivery-status, and
the original message's headers only (text/rfc822-headers) — never its body.
"""

from __future__ import annotations

import email.utils
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from mta_relay.delivery.outcome import RecipientOutcome


def _clean(value: str) -> str:
    """One header line's worth of text: no CR/LF from a remote reply can start a new field."""
    return " ".join(value.split())


def header_section(message: bytes) -> bytes:
    """The original header block, CRLF line endings, up to (not including) the blank line."""
    normalized = message.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    head = normalized.split(b"\n\n", 1)[0]
    return head.replace(b"\n", b"\r\n") + b"\r\n"


def build_dsn(*, original: bytes, envelope_sender: str, failures: Sequence[RecipientOutcome],
              reporting_mta: str, queue_id: str, arrival: datetime, expired: bool,
              now: datetime | None = None) -> bytes:
    """The complete DSN message (CRLF), addressed to ``envelope_sender``, to be sent with MAIL FROM:<>."""
    now = now or datetime.now(UTC)
    boundary = f"=_dsn_{uuid.uuid4().hex}"
    why = ("could not be delivered before the maximum retry age" if expired
           else "was rejected by the receiving mail server")
    human = [f"This is the mail system at {reporting_mta}.", "",
             f"Your message {why} for these recipients:", ""]
    for failure in failures:
        human.append(f"<{failure.recipient}>: {_clean(f'{failure.code} {failure.text}')}")
    per_message = [f"Reporting-MTA: dns; {reporting_mta}", f"X-Queue-ID: {queue_id}",
                   f"Arrival-Date: {email.utils.format_datetime(arrival)}"]
    per_recipient: list[str] = []
    for failure in failures:
        per_recipient += ["", f"Final-Recipient: rfc822; {failure.recipient}", "Action: failed",
                          f"Status: {failure.status}"]
        if failure.remote:
            per_recipient.append(f"Remote-MTA: dns; {_clean(failure.remote)}")
        per_recipient.append(f"Diagnostic-Code: smtp; {_clean(f'{failure.code} {failure.text}')}")
    headers = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: <{envelope_sender}>",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {email.utils.format_datetime(now)}",
        f"Message-ID: <{uuid.uuid4().hex}@{reporting_mta}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
    ]
    parts = [
        "\r\n".join(headers), "",
        f"--{boundary}", "Content-Type: text/plain; charset=utf-8",
        "Content-Description: Notification", "", *human, "",
        f"--{boundary}", "Content-Type: message/delivery-status",
        "Content-Description: Delivery report", "", *per_message, *per_recipient, "",
        f"--{boundary}", "Content-Type: text/rfc822-headers",
        "Content-Description: Undelivered message headers", "",
    ]
    return ("\r\n".join(parts) + "\r\n").encode() + header_section(original) + \
        f"\r\n--{boundary}--\r\n".encode()
