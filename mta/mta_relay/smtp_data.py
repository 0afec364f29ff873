"""The DATA phase read a chunk at a time: the message up to the line ``.``, dot-stuffing removed, with
aiosmtpd 1.4's limits and outcomes, but without a Python step per line.

aiosmtpd's ``smtp_DATA`` awaits ``readuntil(b"\\r\\n")`` and runs its loop body once per line; on the
front door that was most of the CPU of a 100 KiB message (about 1,300 lines) and a few percent of a
1 KiB one (``bench.frontdoor.profile_relay --gil``). ``DataReader.feed`` takes whatever the stream
holds, finds the end with ``bytes.find``, measures lines with ``bytes.split`` and unstuffs with one
``replace``: C loops, not Python ones.

Same outcomes as aiosmtpd's loop (``tests/relay/test_relay_smtp_data.py`` holds the two together on
generated streams cut at random places):
- the end is the first line that is exactly ``.`` (its CRLF included); bytes after it are the next
  command's (``rest``);
- a line longer than ``line_limit`` octets with its CRLF makes the state ``TOO_LONG``; more than
  ``size_limit`` octets of lines (CRLFs and stuffing dots counted, the end line not) make it
  ``TOO_MUCH``; whichever comes first in the stream stays, the message is dropped and reading goes on
  to the end, where the session gives the matching reply;
- a leading dot is removed from every line that has one.
The stream has no bare CR or LF (``framing`` closed the connection before such bytes got here), so
CRLF is the only line end.
"""

from __future__ import annotations

import enum

_END_AT_START = b".\r\n"
_END = b"\r\n.\r\n"
_STUFFED = b"\r\n."


class DataState(enum.Enum):
    NOMINAL = enum.auto()
    TOO_LONG = enum.auto()
    TOO_MUCH = enum.auto()


class DataReader:
    def __init__(self, line_limit: int, size_limit: int | None) -> None:
        self.line_limit = line_limit
        self.size_limit = size_limit or None
        self.state = DataState.NOMINAL
        self.size = 0  # octets of complete lines so far (aiosmtpd's num_bytes), while NOMINAL
        self.done = False
        self.rest = b""  # what followed the end line
        self._parts: list[bytes] = []  # complete lines as received (stuffed), while NOMINAL
        self._tail = b""  # an incomplete last line
        self._tail_size = 0  # octets of the incomplete line, those dropped from _tail included

    def feed(self, chunk: bytes) -> bool:
        """Take the next bytes of the stream; True once the end line was read (``rest`` holds what
        followed it, ``message`` the message)."""
        at_line_start = self._tail_size == len(self._tail)  # the incomplete line is whole, or none
        data = self._tail + chunk if self._tail else chunk
        last = data.rfind(b"\r\n")
        if last < 0:
            self._grow_tail(data, len(chunk))
            return False
        complete, tail = data[:last + 2], data[last + 2:]
        if at_line_start and complete.startswith(_END_AT_START):
            end = 0
        else:
            found = complete.find(_END)
            end = -1 if found < 0 else found + 2
        if end >= 0:
            self._lines(complete[:end])
            self.rest = complete[end + len(_END_AT_START):] + tail
            self.done = True
            return True
        self._lines(complete)
        self._tail, self._tail_size = b"", 0
        self._grow_tail(tail, len(tail))
        return False

    def message(self) -> bytes:
        """The message: every line up to the end line, leading dots removed (empty unless NOMINAL)."""
        body = b"".join(self._parts)
        self._parts = []
        body = body.replace(_STUFFED, b"\r\n")
        return body[1:] if body.startswith(b".") else body

    def _grow_tail(self, data: bytes, new: int) -> None:
        """The incomplete line grew by ``new`` octets to ``data``. Once its text (a CR that may be its
        CRLF's left out) is longer than ``line_limit`` it is too long whatever follows, as aiosmtpd's
        reader finds before the line ends: only its last octet is kept (that CR, perhaps)."""
        self._tail_size += new
        text = self._tail_size - (1 if data.endswith(b"\r") else 0)
        if text > self.line_limit:
            self._set(DataState.TOO_LONG)
            self._tail = data[-1:]
        else:
            self._tail = data

    def _lines(self, lines: bytes) -> None:
        """Complete lines (each ending in CRLF), the first one starting where the incomplete line did."""
        if not lines:
            return
        if self.state is DataState.NOMINAL:  # then no line was cut short by _grow_tail
            size = self.size + len(lines)
            too_much = self.size_limit is not None and size > self.size_limit
            # with its CRLF; the piece after the last CRLF is empty
            too_long = max(map(len, lines.split(b"\r\n"))) + 2 > self.line_limit
            if too_much and too_long:
                self._set(self._first_refusal(lines))
            elif too_much:
                self._set(DataState.TOO_MUCH)
            elif too_long:
                self._set(DataState.TOO_LONG)
            else:
                self._parts.append(lines)
            self.size = size

    def _first_refusal(self, lines: bytes) -> DataState:
        """Both limits broken by the same lines: the one a line-by-line reader meets first. aiosmtpd
        checks a line's size before its length, except for a line whose text alone is longer than
        ``line_limit``: its reader refuses that one before it ends."""
        assert self.size_limit is not None
        size = self.size
        for text in lines.split(b"\r\n")[:-1]:
            if len(text) > self.line_limit:
                return DataState.TOO_LONG
            size += len(text) + 2
            if size > self.size_limit:
                return DataState.TOO_MUCH
            if len(text) + 2 > self.line_limit:
                return DataState.TOO_LONG
        return DataState.TOO_MUCH

    def _set(self, state: DataState) -> None:
        if self.state is DataState.NOMINAL:
            self.state = state
            self._parts = []
