"""The test message: RFC 5322, CRLF line endings, exactly ``size`` octets, no line starting with a dot
(so it needs no dot-stuffing), with a From header in the sender's domain (the relay checks it)."""

from __future__ import annotations

LINE = b"x" * 76 + b"\r\n"


def make_message(mail_from: str, rcpt_to: str, seq: int, size: int = 1024) -> bytes:
    head = (f"From: <{mail_from}>\r\nTo: <{rcpt_to}>\r\nSubject: front-door benchmark\r\n"
            f"Date: Thu, 01 Jan 2026 00:00:00 +0000\r\nMessage-ID: <{seq}@loadgen.localhost>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n").encode()
    room = size - len(head)
    if room < 2:
        raise ValueError(f"size {size} is smaller than the headers ({len(head)} octets)")
    full, rest = divmod(room, len(LINE))
    if rest == 1:  # a line needs at least its CRLF: make the last line one full line longer
        full, rest = full - 1, rest + len(LINE)
    return head + LINE * full + (b"y" * (rest - 2) + b"\r\n" if rest else b"")
