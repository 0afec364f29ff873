"""The spool's thread pool (``io_threads``): results and errors reach the awaiting coroutine, jobs are
spread over the threads up to the cap and queue beyond it, a job cancelled before it started is skipped,
and the threads end with the pool. ``LoopExecutor`` puts a loop's ``asyncio.to_thread`` on such a pool."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import threading
import time

import pytest
from mta_relay import event_loop
from mta_relay.io_threads import IoThreads, LoopExecutor

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


# --- LoopExecutor: the delivery process's default executor (asyncio.to_thread) on these threads ------
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_to_thread_on_the_loop_executor_gives_results_and_errors(loop: event_loop.Loop) -> None:
    async def use() -> tuple[int, str]:
        asyncio.get_running_loop().set_default_executor(LoopExecutor(2, "hop"))
        with pytest.raises(OSError, match="disk full"):
            await asyncio.to_thread(_raise, OSError("disk full"))
        return await asyncio.to_thread(lambda a, b: a + b, 2, 3), await asyncio.to_thread(_thread_name)

    result, name = event_loop.run(use(), preferred=loop)
    assert result == 5
    assert name.startswith("hop_")  # on the pool's threads, not an executor thread of the loop's own


def _thread_name() -> str:
    return threading.current_thread().name


async def test_the_loop_executor_hands_the_loop_its_own_future_and_others_a_concurrent_one() -> None:
    executor = LoopExecutor(1, "kinds")
    try:
        assert asyncio.isfuture(executor.submit(int, "7"))  # what wrap_future passes through unchanged
        off_loop = await asyncio.to_thread(executor.submit, int, "8")
        assert isinstance(off_loop, concurrent.futures.Future)
        assert off_loop.result(5) == 8
    finally:
        executor.shutdown(wait=True)


def test_the_loop_executor_s_shutdown_waits_for_queued_jobs_then_refuses_new_ones() -> None:
    done: list[int] = []

    def slow(n: int) -> None:
        time.sleep(0.05)
        done.append(n)

    async def queue_and_leave() -> None:
        asyncio.get_running_loop().set_default_executor(LoopExecutor(1, "drain"))
        for n in range(3):
            asyncio.get_running_loop().run_in_executor(None, slow, n)  # not awaited: asyncio.run ends

    asyncio.run(queue_and_leave())  # shuts the default executor down, waiting for it
    assert done == [0, 1, 2]
    assert not any(t.name.startswith("drain_") for t in threading.enumerate())

    async def after() -> None:
        executor = LoopExecutor(1, "closed")
        executor.shutdown(wait=True)
        with pytest.raises(RuntimeError, match="after shutdown"):
            executor.submit(int, "1")

    asyncio.run(after())


async def test_a_hop_cancelled_before_it_started_is_skipped_on_the_loop_executor() -> None:
    executor = LoopExecutor(1, "skip")
    gate = threading.Event()
    ran: list[str] = []
    loop = asyncio.get_running_loop()
    try:
        first = loop.run_in_executor(executor, gate.wait, 5)
        second = loop.run_in_executor(executor, ran.append, "second")
        second.cancel()
        gate.set()
        assert await first
        await loop.run_in_executor(executor, ran.append, "third")
        assert ran == ["third"]
    finally:
        executor.shutdown(wait=True)
