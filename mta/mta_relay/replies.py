"""The replies the relay gives, in one place: SMTP text, and the reason key HTTP and metrics use.

The rows of the design's reply table are fixed wording; clients and tests match on them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    code: int
    enhanced: str
    text: str
    reason: str  # bounded metrics label and HTTP JSON "reason"

    @property
    def smtp(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500


STARTTLS_FIRST = Reply(530, "5.7.0", "Must issue a STARTTLS command first", "starttls_required")
AUTH_FAILED = Reply(535, "5.7.8", "Authentication failed", "auth_failed")
IP_NOT_AUTHORIZED = Reply(535, "5.7.8", "IP not authorized", "ip_not_authorized")
SENDER_DOMAIN = Reply(550, "5.7.1", "[ACL] Sender domain not authorized", "sender_domain")
HEADER_DOMAIN = Reply(550, "5.7.1", "From/Sender header not authorized", "header_domain")
QUOTA = Reply(452, "4.7.1", "Quota exceeded, try again later", "quota")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required", "auth_required")
AUTH_THROTTLED = Reply(421, "4.7.0", "Too many failed authentications, closing connection", "auth_throttled")
SPOOL_FAILED = Reply(452, "4.3.1", "Insufficient system storage, try again later", "spool")

SPF_TEMPFAIL = Reply(451, "4.4.3", "Sender domain SPF lookup failed, try again later", "spf_tempfail")
TOO_MANY_RCPTS = Reply(452, "4.5.3", "Too many recipients", "too_many_recipients")
NEEDS_SMTPUTF8 = Reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8", "needs_smtputf8")
TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed limit", "too_big")
BARE_LINE_END = Reply(521, "5.5.2", "Bare CR or LF (or NUL) received, closing connection", "bare_line_end")
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections from your address", "connection_limit")
SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down, try another server", "shutting_down")
INTERNAL = Reply(451, "4.3.0", "Internal error, try again later", "internal")
BAD_MESSAGE = Reply(550, "5.6.0", "Message is not valid RFC 5322", "bad_message")
