"""The spool's thread pool (``io_threads``): results and errors reach the awaiting coroutine, jobs are
spread over the threads up to the cap and queue beyond it, a job cancelled before it started is skipped,
and the threads end with the pool."""

from __future__ import annotations

import asyncio
import gc
import threading
import time

import pytest
from mta_relay.io_threads import IoThreads

pytestmark = pytest.mark.unit


async def test_result_and_exception_reach_the_caller() -> None:
    pool = IoThreads(2, "t")
    assert await pool.run(lambda a, b: a + b, 2, 3) == 5
    with pytest.raises(OSError, match="disk full"):
        await pool.run(_raise, OSError("disk full"))


def _raise(error: BaseException) -> None:
    raise error


async def test_concurrent_jobs_use_up_to_the_cap_then_queue() -> None:
    pool = IoThreads(3, "cap")
    running, most = 0, 0
    lock = threading.Lock()

    def job() -> str:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return threading.current_thread().name

    names = await asyncio.gather(*(pool.run(job) for _ in range(9)))
    assert most == 3  # a burst is spread at once, and never over the cap
    assert len(set(names)) == 3
    assert await pool.run(job)  # idle threads are reused, not added
    assert len([t for t in threading.enumerate() if t.name.startswith("cap_")]) == 3


async def test_job_cancelled_before_it_started_is_skipped() -> None:
    pool = IoThreads(1, "one")
    gate = threading.Event()
    ran: list[str] = []
    first = pool.run(gate.wait, 5)
    second = pool.run(ran.append, "second")
    second.cancel()
    gate.set()
    assert await first
    assert await pool.run(ran.append, "third") is None
    assert ran == ["third"]


def test_threads_end_with_the_pool() -> None:
    async def use(pool: IoThreads) -> None:
        await asyncio.gather(pool.run(time.sleep, 0.01), pool.run(time.sleep, 0.01))

    pool = IoThreads(2, "gone")
    asyncio.run(use(pool))
    assert any(t.name.startswith("gone_") for t in threading.enumerate())
    del pool
    gc.collect()
    deadline = time.monotonic() + 5
    while any(t.name.startswith("gone_") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(t.name.startswith("gone_") for t in threading.enumerate())
