"""A deduplicating work queue with bounded workers, as in client-go: a key queued many times while it waits
runs once; a key is never processed by two workers at once; a failure is retried with backoff."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger("mta_operator.workqueue")
BACKOFF = (0.5, 1, 2, 5, 10, 30)
K = TypeVar("K", bound=Hashable)
# Runs a callback after a delay in seconds (the event loop's ``call_later`` unless a test passes its own).
Later = Callable[[float, Callable[[], None]], object]


class WorkQueue(Generic[K]):
    def __init__(self, handler: Callable[[K], Awaitable[None]], workers: int,
                 later: Later | None = None) -> None:
        self._handler = handler
        self._workers = workers
        self._later = later
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._processing: set[K] = set()
        self._again: set[K] = set()
        self._failures: dict[K, int] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work(), name=f"worker-{i}") for i in range(self._workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def add(self, key: K) -> None:
        if key in self._processing:
            self._again.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def add_after(self, key: K, delay: float) -> None:
        later = self._later or asyncio.get_running_loop().call_later
        later(delay, functools.partial(self.add, key))

    def __len__(self) -> int:
        return len(self._queued) + len(self._processing)

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._processing.add(key)
            try:
                await self._handler(key)
                self._failures.pop(key, None)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # any failure is retried; the reason is logged
                count = self._failures.get(key, 0)
                self._failures[key] = count + 1
                delay = BACKOFF[min(count, len(BACKOFF) - 1)]
                log.warning("reconcile failed, retrying", extra={"key": str(key), "error": str(error),
                                                                 "retry_in": delay})
                self.add_after(key, delay)
            finally:
                self._processing.discard(key)
                if key in self._again:
                    self._again.discard(key)
                    self.add(key)
