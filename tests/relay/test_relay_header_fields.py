"""header_fields must read From/Sender exactly as the email package's header parser does (what the
From check and DKIM's key choice used before), on well-formed and malformed header blocks alike."""

from __future__ import annotations

from email.parser import BytesHeaderParser

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from mta_relay.header_fields import header_values

pytestmark = pytest.mark.unit

NAMES = ["From", "from", "FROM", "Sender", "From ", "X-From", "", "Subject", "Fr om"]
ENDS = [b"\r\n", b"\n", b"\r", b""]
VALUES = [b"a@example.com", b" Bench <bench@example.com>", b"\t<x@evil.com>, y@example.com", b"",
          b"\"x@example.com\"@evil.com", b"caf\xc3\xa9 <c@example.com>", b"(c) z@x.org", b"x:y"]


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    parts: list[bytes] = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["field", "field", "continuation", "envelope", "blank", "junk"]))
        end = draw(st.sampled_from(ENDS[:3]))
        if kind == "field":
            line = draw(st.sampled_from(NAMES)).encode() + b":" + draw(st.sampled_from(VALUES))
        elif kind == "continuation":
            line = draw(st.sampled_from([b" ", b"\t"])) + draw(st.sampled_from(VALUES))
        elif kind == "envelope":
            line = b"From someone@example.com Mon Jan  1 00:00:00 2024"
        elif kind == "blank":
            line = b""
        else:
            line = draw(st.binary(max_size=8))
        parts.append(line + end)
    parts.append(draw(st.sampled_from([b"", b"\r\nbody\r\nFrom: b@evil.com\r\n", b"tail"])))
    return b"".join(parts)


def reference(message: bytes) -> dict[str, list[str]]:
    parsed = BytesHeaderParser().parsebytes(message)
    return {name: [str(v) for v in parsed.get_all(name) or []] for name in ("from", "sender")}


@pytest.mark.parametrize("message", [
    b"From: a@example.com\r\nSubject: x\r\n\r\nbody",
    b"From a@b Mon\r\nFrom: a@example.com\r\n\r\n",
    b" lead\r\nFrom: a@example.com\r\n continued\r\n\r\n",
    b"Subject: x\r\nFrom: a@example.com\r\nFrom: b@example.com\r\n\r\nFrom: c@evil.com\r\n",
    b"Subject: x\r\nbroken line\r\nFrom: c@evil.com\r\n\r\n",
    b"From: caf\xc3\xa9 <c@example.com>\r\n\r\n",
    b"Subject: x\r\nFrom x\r\n",
])
def test_known_blocks_match_the_email_package(message: bytes) -> None:
    assert header_values(message, "from", "sender") == reference(message)


@given(messages())
@example(b"From:a\rFrom:b\r\n\r\n")
def test_header_values_agree_with_the_email_package(message: bytes) -> None:
    found = header_values(message, "from", "sender")
    assert found == reference(message)
    # what the From check parsed before: the block up to the first empty CRLF line, plus CRLF
    assert found == reference(message.split(b"\r\n\r\n", 1)[0] + b"\r\n")
