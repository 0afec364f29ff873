"""The line protocol between the front door (mta-relay) and its delivery process: one JSON object per
line over a socket pair, each with an ``op``.

Front door → delivery: ``queued`` (qid, slot, optionally ``recorded``: a new entry with a retry record,
one a peer handed over), ``reload``, ``drain`` (seconds left), ``metrics`` (id), ``handoff_status`` (id),
the queue administration ops ``queue_*`` (id; their shapes are ``queue_admin``'s), and the replies
``stored`` (id, envelope, slot) / ``store_failed`` (id, error).
Delivery → front door: ``ready`` (once, when it delivers), ``released`` (qid, slot: entry removed, slot
emptied), ``gone`` (qid: entry quarantined), ``store`` (id, envelope, message in base64: a DSN to spool)
and the replies ``metrics_text`` (id, text), ``handoff_counts`` (id, handedOff, failures, active) and
``queue_answer`` (id, status, body).
Message bytes cross only in ``store``; nothing here is ever logged.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
from typing import Any

from mta_relay import queue_admin

REPLIES = frozenset({"stored", "store_failed", "metrics_text", "handoff_counts", queue_admin.REPLY})
# How long a notice may wait for others to share its write (``send_batched``): delivery's ``released``,
# one per message, took a write of its own (and a wake-up of the front door) at every message.
BATCH_SECONDS = 0.005
LINE_LIMIT = 1 << 27  # a DSN quotes the bounced message: room for the largest one, in base64
Message = dict[str, Any]


class Channel:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 replies: frozenset[str] = REPLIES) -> None:
        """``replies``: the ops that answer a request (matched to it by id); every other op is news."""
        self._reader, self._writer = reader, writer
        self._replies = replies
        self._loop = asyncio.get_running_loop()
        self._pending: dict[int, asyncio.Future[Message]] = {}
        self._ids = itertools.count(1)
        self._buffer: list[str] = []
        self._flush_soon = False  # a flush is due in this loop iteration
        self._flush_timer: asyncio.TimerHandle | None = None  # one due within BATCH_SECONDS

    @classmethod
    async def open(cls, sock: socket.socket, replies: frozenset[str] = REPLIES) -> Channel:
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=LINE_LIMIT)
        return cls(reader, writer, replies)

    def send(self, message: Message) -> None:
        """Queued and written once per loop iteration: a burst of acceptances is one write."""
        if not self._flush_soon:
            self._flush_soon = True
            self._loop.call_soon(self._flush)
        self._buffer.append(json.dumps(message, separators=(",", ":")))

    def send_batched(self, message: Message) -> None:
        """A notice nobody waits on: written within ``BATCH_SECONDS``, with whatever else is sent
        meanwhile (in the order sent, as with ``send``)."""
        if not self._flush_soon and self._flush_timer is None:
            self._flush_timer = self._loop.call_later(BATCH_SECONDS, self._flush)
        self._buffer.append(json.dumps(message, separators=(",", ":")))

    def send_threadsafe(self, message: Message, *, batched: bool = False) -> None:
        self._loop.call_soon_threadsafe(self.send_batched if batched else self.send, message)

    def flush(self) -> None:
        """Write what is queued now (before the process ends: a batched notice may be waiting)."""
        self._flush()

    def _flush(self) -> None:
        self._flush_soon = False
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        lines, self._buffer = self._buffer, []
        if lines and not self._writer.is_closing():
            self._writer.write(("\n".join(lines) + "\n").encode())

    async def request(self, message: Message) -> Message:
        """Send a request and wait for its reply (the caller bounds the wait)."""
        request_id = next(self._ids)
        future: asyncio.Future[Message] = self._loop.create_future()
        self._pending[request_id] = future
        self.send({**message, "id": request_id})
        try:
            return await future
        finally:
            self._pending.pop(request_id, None)

    async def receive(self) -> Message | None:
        """The next message that is not a reply to one of our requests; None once the peer is gone."""
        while True:
            try:
                line = await self._reader.readline()
            except (ConnectionError, ValueError):  # ValueError: a line over the limit
                line = b""
            if not line:
                for future in self._pending.values():
                    if not future.done():
                        future.set_exception(ConnectionError("channel closed"))
                return None
            message: Message = json.loads(line)
            if message["op"] not in self._replies:
                return message
            waiting = self._pending.get(message["id"])
            if waiting is not None and not waiting.done():
                waiting.set_result(message)

    def close(self) -> None:
        self._writer.close()
