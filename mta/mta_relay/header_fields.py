"""Header field values from a raw message, as ``email.parser.BytesHeaderParser`` (compat32) and
``Message.get_all`` give them, without building a Message: the From check and DKIM's key choice need
two fields per message, and the email package's feed parser costs several times more for them.

Same rules as the feed parser: lines end at CRLF, CR or LF; the header block ends at the first line that
is neither a field (``name:``), a continuation (leading space or tab) nor a ``From `` envelope line;
envelope lines, continuations that follow no field and fields with an empty name are skipped; a value
is the text after the first colon, left-stripped of spaces and tabs, with its continuation lines, less
trailing CR/LF. Non-ASCII header bytes take the email package itself (it wraps such values in Header
objects). A property test holds the two together.
"""

from __future__ import annotations

import re
from email.parser import BytesHeaderParser
from email.policy import compat32

_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")
_FIELD_OR_CONTINUATION = re.compile(r"From |[\041-\071\073-\176]*:|[\t ]")
_LINE_BYTES = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")
_FIELD_OR_CONTINUATION_BYTES = re.compile(rb"From |[\041-\071\073-\176]*:|[\t ]")


def header_block(message: bytes) -> bytes:
    """The message up to its first empty CRLF line, which the header block cannot extend past."""
    end = message.find(b"\r\n\r\n")
    return message if end < 0 else message[:end + 2]


def header_end(message: bytes) -> int:
    """Where the header section ends by the same rules: the offset of the empty line (or of the first
    line that is no field), or the message's length when it is all header. Fields added there are the
    last of the header section."""
    end = 0
    for match in _LINE_BYTES.finditer(header_block(message)):
        if not _FIELD_OR_CONTINUATION_BYTES.match(match.group()):
            return match.start()
        end = match.end()
    return end


def header_values(message: bytes, *names: str) -> dict[str, list[str]]:
    """Every value of each field in ``names`` (lower case; any case in the message), in order."""
    block = header_block(message)
    values: dict[str, list[str]] = {name: [] for name in names}
    if not block.isascii():
        parsed = BytesHeaderParser(policy=compat32).parsebytes(block)
        return {name: [str(value) for value in parsed.get_all(name) or []] for name in names}
    field: list[str] = []  # the lines of the wanted field being read
    for match in _LINE.finditer(block.decode("ascii")):  # stops where the header block does
        line = match.group()
        if not _FIELD_OR_CONTINUATION.match(line):
            break
        if line[0] in " \t":
            if field:
                field.append(line)
            continue
        if field:
            _flush(field, values)
        if line.startswith("From "):
            continue  # an envelope line: not a field, and no continuation follows it
        colon = line.find(":")
        if colon > 0 and (name := line[:colon].lower()) in values:
            field = [name, line[colon + 1:]]
    if field:
        _flush(field, values)
    return values


def _flush(field: list[str], values: dict[str, list[str]]) -> None:
    name, first, *rest = field
    values[name].append((first.lstrip(" \t") + "".join(rest)).rstrip("\r\n"))
    field.clear()
