"""The real receiving SMTP server (``smtp_receiver.SmtpReceiver``) on its own event loop thread, for
synchronous tests whose other side (pods run by the test bed) lives in other processes."""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from typing import Any

from support.smtp_receiver import SmtpReceiver, Transaction


class ThreadedReceiver:
    """``with ThreadedReceiver(tls=ctx) as rx:`` listens on ``rx.host``/``rx.port`` until the block ends."""

    def __init__(self, host: str = "127.0.0.1", *, tls: ssl.SSLContext | None = None, **kwargs: Any) -> None:
        self.receiver = SmtpReceiver(host, tls=tls, **kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="smtp-receiver", daemon=True)

    @property
    def host(self) -> str:
        return self.receiver.host

    @property
    def port(self) -> int:
        return self.receiver.port

    @property
    def transactions(self) -> list[Transaction]:
        return list(self.receiver.transactions)  # a copy: the loop thread appends to the original

    def __enter__(self) -> ThreadedReceiver:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.receiver.start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _stop(self) -> None:
        await self.receiver.stop()
        # Sessions still being served end here, not as "Task was destroyed but it is pending".
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    def wait_for(self, count: int, within: float = 20.0) -> list[Transaction]:
        """At least ``count`` transactions, or AssertionError saying how many arrived."""
        deadline = time.monotonic() + within
        while len(self.receiver.transactions) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} transactions, got {len(self.receiver.transactions)}")
            time.sleep(0.05)
        return self.transactions
