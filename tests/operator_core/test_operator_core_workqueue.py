"""The work queue: a key queued many times runs once (once more if it was queued while running, never N
times); a failing key is retried after delays that grow, stop growing at the cap, and start again from
the first after a success. The delays are read from an injected ``later``, so no test waits for them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from mta_operator.controller.workqueue import BACKOFF, WorkQueue
from operator_core.conftest import wait_for

pytestmark = pytest.mark.unit


class Later:
    """Records each delayed call instead of waiting; ``fire()`` runs the ones recorded so far."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self._due: list[Callable[[], None]] = []

    def __call__(self, delay: float, callback: Callable[[], None]) -> None:
        self.delays.append(delay)
        self._due.append(callback)

    def fire(self) -> None:
        due, self._due = self._due, []
        for callback in due:
            callback()


async def test_a_key_queued_many_times_while_it_waits_runs_once() -> None:
    runs: list[str] = []

    async def handler(key: str) -> None:
        runs.append(key)

    queue: WorkQueue[str] = WorkQueue(handler, workers=2)
    for _ in range(50):
        queue.add("a")
    queue.add("b")
    queue.start()
    await wait_for(lambda: len(queue) == 0, "the queue drained")
    await asyncio.sleep(0.02)
    await queue.stop()
    assert sorted(runs) == ["a", "b"]


async def test_a_key_queued_many_times_while_it_runs_runs_once_more() -> None:
    running, release = asyncio.Event(), asyncio.Event()
    runs = 0
    concurrent = max_concurrent = 0

    async def handler(key: str) -> None:
        nonlocal runs, concurrent, max_concurrent
        runs += 1
        concurrent += 1
        max_concurrent = max(max_concurrent, concurrent)
        if runs == 1:
            running.set()
            await release.wait()
        concurrent -= 1

    queue: WorkQueue[str] = WorkQueue(handler, workers=4)
    queue.start()
    queue.add("a")
    await running.wait()
    for _ in range(20):
        queue.add("a")  # busy: remembered once, not queued for the idle workers
    await asyncio.sleep(0.02)
    assert runs == 1
    release.set()
    await wait_for(lambda: runs == 2 and len(queue) == 0, "the second run")
    await asyncio.sleep(0.02)
    await queue.stop()
    assert runs == 2
    assert max_concurrent == 1  # never two workers on one key


async def test_failures_back_off_up_to_the_cap_and_a_success_resets_the_delay() -> None:
    later = Later()
    outcomes = [False] * (len(BACKOFF) + 2) + [True] + [False]
    runs = 0

    async def handler(key: str) -> None:
        nonlocal runs
        ok = outcomes[runs]
        runs += 1
        if not ok:
            raise RuntimeError("API unreachable")

    queue: WorkQueue[str] = WorkQueue(handler, workers=1, later=later)
    queue.start()
    queue.add("a")
    for expected_runs in range(1, len(outcomes)):
        await wait_for(lambda n=expected_runs: runs == n and len(queue) == 0, f"run {expected_runs}")
        later.fire()
    queue.add("a")  # after the success nothing is scheduled: a new event queues it
    await wait_for(lambda: runs == len(outcomes) and len(queue) == 0, "the last run")
    await queue.stop()
    assert tuple(sorted(BACKOFF)) == BACKOFF  # growing
    # Each failure waits longer than the last, until the cap, which then holds.
    assert later.delays[:len(BACKOFF) + 2] == [*BACKOFF, BACKOFF[-1], BACKOFF[-1]]
    # The success cleared the count: the next failure waits the first delay again.
    assert later.delays[len(BACKOFF) + 2:] == [BACKOFF[0]]
