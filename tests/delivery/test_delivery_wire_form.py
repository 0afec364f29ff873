"""``wire_form``: every line end becomes CRLF and the message ends in one, whatever mix it is given;
what is already so comes back unchanged (the fast path must agree with the rewrite on every input)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mta_relay.delivery.client import wire_form

pytestmark = pytest.mark.unit

_PIECES = st.sampled_from([b"\r\n", b"\n", b"\r", b"\n\r", b"a", b".", b" ", b"\r\r\n", b"\x00"])


def rewritten(message: bytes) -> bytes:
    """The definition, without the fast path."""
    message = re.sub(rb"\r\n|\n|\r", b"\r\n", message)
    return message if message.endswith(b"\r\n") else message + b"\r\n"


@given(st.lists(_PIECES, max_size=40).map(b"".join))
def test_wire_form_is_the_rewrite_on_any_mix_of_line_ends(message: bytes) -> None:
    assert wire_form(message) == rewritten(message)


@pytest.mark.parametrize(("given_", "sent"), [
    (b"", b"\r\n"), (b"a", b"a\r\n"), (b"a\r\n", b"a\r\n"), (b"a\nb\r\n", b"a\r\nb\r\n"),
    (b"a\rb\r\n", b"a\r\nb\r\n"), (b"a\r\n\r", b"a\r\n\r\n"), (b"\n\r", b"\r\n\r\n")])
def test_wire_form_examples(given_: bytes, sent: bytes) -> None:
    assert wire_form(given_) == sent
