"""The DATA phase read a chunk at a time (``smtp_data.DataReader`` in ``RelaySession._data``) against
aiosmtpd's own ``SMTP.smtp_DATA``, which reads a line at a time: both run on the same streams, fed in
the same chunks to a real ``asyncio.StreamReader`` with aiosmtpd's stream limit. The replies, the message
handed to the DATA hook and the bytes left for the next command must be the same. aiosmtpd is pinned to
1.4 (pyproject.toml) because ``_data`` restates its ``smtp_DATA``; this test is what says it still does."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import aiosmtpd
import pytest
from aiosmtpd.smtp import SMTP, Envelope
from hypothesis import example, given, settings
from hypothesis import strategies as st
from mta_relay.smtp_data import DataReader, DataState
from mta_relay.smtp_session import RelaySession

pytestmark = pytest.mark.unit
LINE_LIMIT = SMTP.line_length_limit  # 1001: aiosmtpd's line limit, and its stream reader's


class _Writer:
    def close(self) -> None:
        pass


class _Session:
    """What ``smtp_DATA`` uses of its session, recording what it does."""

    line_length_limit = LINE_LIMIT
    _decode_data = False
    enable_SMTPUTF8 = True

    def __init__(self, reader: asyncio.StreamReader, size_limit: int | None) -> None:
        self._reader, self._writer = reader, _Writer()
        self.data_size_limit = size_limit
        self.transport = object()
        self.envelope = Envelope()
        self.envelope.rcpt_tos = ["rcpt@example.net"]
        self._handle_hooks = {"DATA": None}
        self.replies: list[str] = []
        self.messages: list[bytes] = []

    async def check_helo_needed(self) -> bool:
        return False

    async def check_auth_needed(self, caller_method: str) -> bool:
        return False

    async def push(self, status: str) -> None:
        self.replies.append(status)

    async def _call_handler_hook(self, command: str) -> str:
        assert isinstance(self.envelope.original_content, bytes)
        assert self.envelope.content == self.envelope.original_content
        self.messages.append(self.envelope.original_content)
        return "250 queued"

    def _set_post_data_state(self) -> None:
        self.envelope = Envelope()


async def _run(data: Any, chunks: list[bytes],
               size_limit: int | None) -> tuple[list[str], list[bytes], bytes]:
    reader = asyncio.StreamReader(limit=LINE_LIMIT)
    session = _Session(reader, size_limit)
    task = asyncio.create_task(data(session, ""))
    for chunk in chunks:
        reader.feed_data(chunk)
        for _ in range(3):
            await asyncio.sleep(0)
    reader.feed_eof()
    await asyncio.wait_for(task, 5)
    return session.replies, session.messages, await reader.read()


def _chunked(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    return [stream[a:b] for a, b in itertools.pairwise(points)]


_TEXT = st.sampled_from([0, 1, 2, 5, 60, 997, 998, 999, 1000, 1001, 1002, 1003, 1500])
_LINE = st.one_of(
    st.builds(lambda n, dot: (b"." if dot else b"") + b"x" * n, _TEXT, st.booleans()),
    st.sampled_from([b".", b"..", b"...", b". ", b" ."]),
)


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[int], int | None]:
    lines = draw(st.lists(_LINE, max_size=12))
    after = draw(st.sampled_from([b"", b"QUIT\r\n", b"MAIL FROM:<a@example.com>\r\nRCPT"]))
    stream = b"".join(line + b"\r\n" for line in lines) + b".\r\n" + after
    cuts = draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=8))
    size_limit = draw(st.sampled_from([None, 0, 10, 1000, 1003, 2004, 3000]))
    return stream, cuts, size_limit


@settings(max_examples=400, deadline=None)
@given(streams())
@example((b"x" * 1000 + b"\r\n.\r\n", [], 1001))  # over the size in a line of 1002 octets: 552 first
@example((b"x" * 1002 + b"\r\n.\r\n", [], 1001))  # a line too long for the stream reader: 500 first
@example((b"x" * 1001 + b"\r", [1002], None))  # a CR that ends a chunk, its LF in the next
@example((b"x" * 1001 + b"\r\n.\r\n", [1002], 1002))  # ... on a line of 1003 octets over the size: 552
@example((b"x" * 1500 + b"\r\n.\r\n", [1501], None))  # a CR ending a chunk of a line too long
@example((b"x" * 1500 + b".\r\ny\r\n.\r\n", [1501], None))  # a line too long that ends in a dot
@example((b"a\r\n.", [4], None))  # the end line cut after its dot
@example((b"..\r\n.\r\n", [1, 2, 3, 4], None))  # a stuffed dot, then the end line, a byte at a time
def test_reads_as_aiosmtpd_does(case: tuple[bytes, list[int], int | None]) -> None:
    stream, cuts, size_limit = case
    if b"\r\n.\r\n" not in b"\r\n" + stream:
        stream += b"\r\n.\r\n"
    chunks = _chunked(stream, cuts)
    ours = asyncio.run(_run(RelaySession._data, chunks, size_limit))
    theirs = asyncio.run(_run(SMTP.smtp_DATA, chunks, size_limit))
    assert ours == theirs


def test_aiosmtpd_is_the_version_restated() -> None:
    assert aiosmtpd.__version__.startswith("1.4.")


def test_reader_unstuffs_and_keeps_what_follows() -> None:
    reader = DataReader(LINE_LIMIT, None)
    assert not reader.feed(b".leading\r\n..\r\nmid.dle\r\n")
    assert reader.feed(b".\r\nQUIT\r\n")
    assert reader.state is DataState.NOMINAL
    assert reader.message() == b"leading\r\n.\r\nmid.dle\r\n"
    assert reader.rest == b"QUIT\r\n"
