"""What the rerankers share: the check every answer passes, and the in-process rerankers' base.

Every reranker returns one finite float per candidate, in candidate order; anything else is a
DependencyBadResponse, raised by `check_scores` once per rerank, inside the reranker's `score`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from app.errors import DependencyBadResponse
from app.types import Candidate

DEPENDENCY = "reranker"
T = TypeVar("T")


def check_scores(scores: Sequence[float], n: int) -> list[float]:
    """One finite float per candidate, or DependencyBadResponse."""
    if len(scores) != n:
        raise DependencyBadResponse(DEPENDENCY, f"{len(scores)} scores for {n} candidates")
    out = [float(s) for s in scores]
    if not all(math.isfinite(s) for s in out):
        raise DependencyBadResponse(DEPENDENCY, "non-finite score")
    return out


class Pool:
    """A bounded worker pool for CPU-bound scoring, off the event loop."""

    def __init__(self, concurrency: int, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=name)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class PooledReranker:
    """An in-process reranker: `score_sync` runs on a pool of at most `concurrency` workers,
    and its answer is checked on the way out. Loaded means ready: `ping` has nothing to ask."""

    def __init__(self, concurrency: int, name: str) -> None:
        self._pool = Pool(concurrency, name)

    def score_sync(self, query: str, candidates: Sequence[Candidate]) -> list[float]:
        raise NotImplementedError

    async def score(self, query: str, candidates: Sequence[Candidate]) -> list[float]:
        return check_scores(await self._pool.run(self.score_sync, query, candidates), len(candidates))

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        self._pool.close()
