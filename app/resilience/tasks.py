"""Stopping a task for good. Under Python 3.11 `asyncio.wait_for`, which redis-py uses for every
socket write, can swallow a cancellation that arrives just as its inner call completes: the task
then goes on as if it had never been cancelled, and whoever awaits it waits for good (seen here:
a job worker in its Redis polling loop). `stop_task` cancels again until the task has ended."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

EVERY_S = 0.2  # a cancellation that was swallowed is sent again this often


async def stop_task(task: asyncio.Task[Any], within_s: float) -> bool:
    """Cancel `task` until it has ended (True), or `within_s` has passed (False: it is left
    running). An exception it ended with is retrieved (its owner logged it already)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within_s
    while not task.done():
        left = end - loop.time()
        if left <= 0:
            return False
        task.cancel()
        await asyncio.wait({task}, timeout=min(EVERY_S, left))
    if not task.cancelled():
        with contextlib.suppress(BaseException):
            task.exception()
    return True
