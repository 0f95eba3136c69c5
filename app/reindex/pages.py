"""The serving collection page by page, as the points a reindex writes into the new one (the
same on both backends: each store's `scroll` gives one page and the offset of the next)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np

from app.types import PointIn

Scroll = Callable[[Any, int, bool], Awaitable[tuple[list[Any], Any]]]


async def scroll_pages(scroll: Scroll, batch: int, vectors: bool) -> AsyncIterator[list[PointIn]]:
    """Every point with its payload and, if `vectors`, its stored vector (else an empty one, for
    a re-embedding), `batch` at a time."""
    offset, empty = None, np.zeros(0, dtype=np.float32)
    while True:
        records, offset = await scroll(offset, batch, vectors)
        yield [
            PointIn(
                str(r.id),
                np.asarray(r.vector, dtype=np.float32) if vectors else empty,
                dict(r.payload or {}),
            )
            for r in records
        ]
        if offset is None:
            return
