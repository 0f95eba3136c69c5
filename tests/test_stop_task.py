"""stop_task ends a task that swallowed a cancellation (as Python 3.11's asyncio.wait_for, under
redis-py's socket writes, does when the cancel lands as the write completes), and gives up,
saying so, on one that never ends."""

from __future__ import annotations

import asyncio

from app.resilience.tasks import stop_task


async def test_a_task_that_swallowed_a_cancellation_is_cancelled_again() -> None:
    swallowed = 0

    async def loop() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                if swallowed == 0:  # the first cancel is lost, as wait_for may lose it
                    swallowed += 1
                    continue
                raise

    task = asyncio.create_task(loop())
    await asyncio.sleep(0.01)
    assert await stop_task(task, within_s=5.0)
    assert task.cancelled() and swallowed == 1


async def test_a_task_that_ignores_every_cancellation_is_left_and_reported() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0.01)  # inside its loop (a task cancelled before it starts never runs)
    assert not await stop_task(task, within_s=0.5)
    assert not task.done()
    release.set()  # (the test ends it itself)
    await task


async def test_an_exception_it_ended_with_is_retrieved() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    assert await stop_task(task, within_s=1.0)
    assert task.done() and not task.cancelled()
