"""How both snapshot services report an operation: its duration and outcome, to the metrics."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

Observe = Callable[[str, str, float], None]  # op, outcome, seconds


async def timed(observe: Observe | None, op: str, work: Callable[[], Awaitable[Any]]) -> Any:
    """Run one snapshot operation and report its duration and outcome (ok, or error if it raised)."""
    t0, outcome = time.perf_counter(), "error"
    try:
        result = await work()
        outcome = "ok"
        return result
    finally:
        if observe is not None:
            observe(op, outcome, time.perf_counter() - t0)
