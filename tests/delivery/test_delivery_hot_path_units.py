"""What the delivery process does for every message, made cheaper and held to the plain version: the
quoted MAIL/RCPT addresses (cached), dot-stuffing (skipped when no line starts with "."), and the
pipelined exchange's reply timeout (a timer, not ``asyncio.wait_for``)."""

from __future__ import annotations

import asyncio
import re

import pytest
from aiosmtplib import SMTPReadTimeoutError
from aiosmtplib.email import quote_address
from hypothesis import given
from hypothesis import strategies as st
from mta_relay.delivery.client import _dot_stuffed, _quoted
from mta_relay.delivery.pipelining import Replies

pytestmark = pytest.mark.unit

_PIECES = st.sampled_from([b"\r\n", b".", b"..", b"a", b" ", b"\n", b"\r"])


@given(st.lists(_PIECES, max_size=40).map(b"".join))
def test_dot_stuffing_is_the_substitution_on_any_message(message: bytes) -> None:
    assert _dot_stuffed(message) == re.sub(rb"(?m)^\.", b"..", message)


@pytest.mark.parametrize("address", ["app@example.com", "", "Bob <bob@example.net>", " x@example.org "])
def test_a_quoted_address_is_aiosmtplib_s_and_repeats_come_from_the_cache(address: str) -> None:
    assert _quoted(address, "ascii") == quote_address(address).encode("ascii")
    hits = _quoted.cache_info().hits
    assert _quoted(address, "ascii") == quote_address(address).encode("ascii")
    assert _quoted.cache_info().hits == hits + 1


def test_a_refused_address_raises_every_time_and_is_not_cached() -> None:
    for _ in range(2):
        with pytest.raises(ValueError, match="not permitted"):
            _quoted("a b@example.com", "ascii")  # a space would end the address on the command line
    with pytest.raises(UnicodeEncodeError):
        _quoted("jörg@example.com", "ascii")
    assert _quoted("jörg@example.com", "utf-8") == "<jörg@example.com>".encode()


class _Owner(asyncio.Protocol):
    pass


async def test_a_reply_that_does_not_come_times_out_and_one_that_does_is_read() -> None:
    replies = Replies(_Owner(), timeout=0.05)
    with pytest.raises(SMTPReadTimeoutError):
        await replies.next()
    asyncio.get_running_loop().call_later(0.01, replies.data_received, b"250 2.0.0 Ok\r\n")
    reply = await replies.next()
    assert (reply.code, reply.message) == (250, "2.0.0 Ok")
    untimed = Replies(_Owner(), timeout=None)
    untimed.data_received(b"354 go on\r\n")
    assert (await untimed.next()).code == 354


async def test_a_cancelled_wait_for_a_reply_leaves_no_timer_behind() -> None:
    replies = Replies(_Owner(), timeout=0.05)
    waiting = asyncio.create_task(replies.next())
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.sleep(0.08)  # past the timeout: nothing fires into the next wait
    replies.data_received(b"250 Ok\r\n")
    assert (await replies.next()).code == 250
