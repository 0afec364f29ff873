"""SMTP line framing guard: CR and LF may only appear together as CRLF, and NUL never.

Checked on the raw (post-TLS) byte stream before aiosmtpd sees it, in commands and message data alike:
a bare LF or CR is what SMTP smuggling relies on (a receiver that ends DATA at ``\\n.\\n`` sees two
messages where we saw one), so we refuse and disconnect, as Postfix does with
``smtpd_forbid_bare_newline``. Stateful across chunks (a CR may end one chunk and its LF begin the next).
"""

from __future__ import annotations


class LineFraming:
    def __init__(self) -> None:
        self._pending_cr = False

    def feed(self, data: bytes) -> bool:
        """True while the stream is well formed so far."""
        if not data:
            return True
        if self._pending_cr:
            if data[0:1] != b"\n":
                return False
            data = data[1:]
        self._pending_cr = data.endswith(b"\r")
        if self._pending_cr:
            data = data[:-1]
        # Every CR and every LF is part of a CRLF exactly when there are as many CRLFs as CRs and as
        # LFs (CRLFs cannot overlap): three counts, no copy of the data (a message's worth per DATA).
        return b"\0" not in data and data.count(b"\r") == data.count(b"\n") == data.count(b"\r\n")
