"""Stopping a task for good. Under Python 3.11 `asyncio.wait_for`, which redis-py uses for every
socket write, can swallow a cancellation that arrives just as its inner call completes: the task
then goes on as if it had never been cancelled, and whoever awaits it waits for good (seen here:
a job worker in its Redis polling loop). `stop_task` cancels again until the task has ended."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

GRACE_S = 2.0  # how long a task is given to end after the first cancellation
EVERY_S = 0.2  # then a cancellation that was swallowed is sent again this often


async def stop_task(task: asyncio.Task[Any], within_s: float) -> bool:
    """Cancel `task` until it has ended (True), or `within_s` has passed (False: it is left
    running). An exception it ended with is retrieved (its owner logged it already)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within_s
    wait_s = GRACE_S  # the first cancel's own clean-up may take a while: not cut short
    while not task.done():
        left = end - loop.time()
        if left <= 0:
            return False
        task.cancel()
        await asyncio.wait({task}, timeout=min(wait_s, left))
        wait_s = EVERY_S
    if not task.cancelled():
        with contextlib.suppress(BaseException):
            task.exception()
    return True
