"""What one delivery attempt did for each recipient: delivered, deferred (retry) or failed (bounce)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from enum import Enum

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")


class Result(Enum):
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    FAILED = "failed"


@dataclass(frozen=True)
class RecipientOutcome:
    """The next hop's answer for one recipient (or our own, for DNS and connection trouble)."""

    recipient: str
    result: Result
    code: int
    text: str
    remote: str = ""  # host name or address of the next hop that answered, empty when none did
    address: str = ""  # that hop's IP address
    tls_version: str = ""  # of the connection the answer came on ("" : plaintext or no connection)
    tls_cipher: str = ""
    tls_policy: str = ""  # the TLS policy applied to that connection (``hop_tls.Applied``)

    @property
    def status(self) -> str:
        """RFC 3463 status: the enhanced code from the reply text, else one derived from the reply class."""
        match = _ENHANCED.match(self.text)
        if match and match.group(1) == str(self.code)[0]:
            return ".".join(match.groups())
        return f"{str(self.code)[0]}.0.0"


def classify(code: int) -> Result:
    """2xx delivered, 4xx deferred, anything else a permanent failure."""
    if 200 <= code < 300:
        return Result.DELIVERED
    if 400 <= code < 500:
        return Result.DEFERRED
    return Result.FAILED


def outcome(recipient: str, code: int, text: str, remote: str = "") -> RecipientOutcome:
    return RecipientOutcome(recipient, classify(code), code, text, remote)


def everyone(recipients: list[str], code: int, text: str, remote: str = "") -> list[RecipientOutcome]:
    """The same answer for every recipient (connection-level trouble, a refused MAIL FROM or DATA)."""
    return [outcome(rcpt, code, text, remote) for rcpt in recipients]


def with_hop(outcomes: list[RecipientOutcome], address: str, tls_version: str,
             tls_cipher: str, tls_policy: str = "") -> list[RecipientOutcome]:
    """The outcomes, each saying which connection (address, TLS) its answer came on."""
    return [dataclasses.replace(o, address=address, tls_version=tls_version, tls_cipher=tls_cipher,
                                tls_policy=tls_policy) for o in outcomes]
