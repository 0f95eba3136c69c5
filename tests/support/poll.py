"""Polling a condition of the system (never retrying an assertion) until it holds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


def poll(check: Callable[[], Any], timeout: float, interval: float = 0.2, what: str = "condition") -> Any:
    """Call `check` until it returns something truthy and return that; an OSError (a server not
    up yet) counts as "not yet". AssertionError after `timeout` seconds."""
    end = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except OSError:
            value = None
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not met within {timeout} s")
        time.sleep(interval)


async def apoll(
    check: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02, what: str = "condition"
) -> Any:
    """`poll` for the event loop: sleeps with asyncio between calls."""
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not met within {timeout} s")
        await asyncio.sleep(interval)
