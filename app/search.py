"""Search that never silently drops passages (DESIGN §1 step 3).

The vector store answers from its HNSW index. Two checks keep it honest, both cheap:

- **Counts.** A search that returns fewer than `k` hits is compared with the number of points
  that match the tenant and filter (a count through the payload index). If more match, the index
  answer was short and the search is repeated exactly (`rag_search_exact_fallback_total{reason=
  "short"}`).
- **Writes verified.** After every write (`app/ingest.py`), each written point is searched with
  its own vector under its tenant's filter; a point the index cannot find marks its tenant, and
  that tenant's searches are exact (`reason="unverified_write"`) until a later check finds every
  marked point again. So a write that returns is visible to the next search, whatever the
  engine's graph does.

The log says either at most once a minute; the RUNBOOK says what to do when the counter climbs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from app.clients.vectorstore import Candidate, Filters, VectorStore

log = logging.getLogger("rag.search")
T = TypeVar("T")
Runner = Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]
VERIFY_LIMIT = 10
VERIFY_EF = 128
SAME_VECTOR = 0.9999  # cosine of a point with its own vector, give or take float rounding


async def _direct(fn: Callable[[], Awaitable[T]]) -> T:
    return await fn()


class SearchIntegrity:
    """Per store: the tenants whose last writes the index could not find, and the log throttle."""

    def __init__(self, log_interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        # tenant -> point ids written but not found by their own vector
        self.unverified: dict[str, dict[str, npt.NDArray[np.float32]]] = {}
        self._log_interval = log_interval_s
        self._clock = clock
        self._last_log: dict[str, float] = {}

    def note(self, reason: str, **detail: Any) -> None:
        now = self._clock()
        last = self._last_log.get(reason)
        if last is None or now - last >= self._log_interval:
            self._last_log[reason] = now
            log.warning(
                "index answer not trusted; answering from exact search",
                extra={"reason": reason, **detail},
            )


def integrity_of(store: VectorStore) -> SearchIntegrity:
    """The store's SearchIntegrity, made on first use (one per store object, shared by the
    pipeline's searches and every write through app/ingest.py)."""
    found: SearchIntegrity | None = getattr(store, "_integrity", None)
    if found is None:
        found = SearchIntegrity()
        store._integrity = found  # type: ignore[attr-defined]
    return found


async def complete_search(
    store: VectorStore,
    vector: npt.NDArray[np.float32],
    k: int,
    ef: int,
    tenant: str,
    filters: Filters,
    *,
    run: Runner = _direct,
    on_fallback: Callable[[str], None] | None = None,
) -> list[Candidate]:
    """`store.search`, but never fewer hits than match, and exact for an unverified tenant.

    `run` wraps each store call (the pipeline passes its Qdrant guard: deadline, breaker, retry).
    """
    integrity = integrity_of(store)
    if tenant in integrity.unverified:
        _fallback(integrity, on_fallback, "unverified_write", tenant)
        hits: list[Candidate] = await run(lambda: store.search(vector, k, ef, tenant, filters, True))
        return hits
    hits = await run(lambda: store.search(vector, k, ef, tenant, filters))
    if len(hits) < k:
        matching: int = await run(lambda: store.count(tenant, filters))
        if matching > len(hits):
            _fallback(integrity, on_fallback, "short", tenant, got=len(hits), matching=matching)
            hits = await run(lambda: store.search(vector, k, ef, tenant, filters, True))
    return hits


def _fallback(
    integrity: SearchIntegrity, on_fallback: Callable[[str], None] | None, reason: str, tenant: str, **kw: Any
) -> None:
    if on_fallback is not None:
        on_fallback(reason)
    integrity.note(reason, tenant=tenant, **kw)


async def verify_writes(
    store: VectorStore, written: dict[str, dict[str, npt.NDArray[np.float32]]]
) -> dict[str, int]:
    """Search every written point (tenant -> {point id: vector}), and every point still marked
    from earlier writes, with its own vector; returns tenant -> points the index missed. A tenant
    with misses is searched exactly until a later call finds all of its marked points."""
    integrity = integrity_of(store)
    todo: dict[str, dict[str, npt.NDArray[np.float32]]] = {}
    for tenant, points in [*integrity.unverified.items(), *written.items()]:
        todo.setdefault(tenant, {}).update(points)
    missed: dict[str, int] = {}
    for tenant, points in todo.items():
        ids = list(points)
        found = await store.nearest_ids(np.stack([points[i] for i in ids]), VERIFY_LIMIT, VERIFY_EF, tenant)
        lost = {pid: points[pid] for pid, hits in zip(ids, found, strict=True) if not _finds(pid, hits)}
        if lost:
            integrity.unverified[tenant] = lost
            missed[tenant] = len(lost)
            integrity.note("unverified_write", tenant=tenant, missed=len(lost), checked=len(points))
        else:
            integrity.unverified.pop(tenant, None)
    return missed


def _finds(pid: str, hits: list[tuple[str, float]]) -> bool:
    if any(hid == pid for hid, _ in hits):
        return True
    # exact duplicates of the point can fill every place ahead of it: a tie, not a miss
    return len(hits) == VERIFY_LIMIT and hits[-1][1] >= SAME_VECTOR


def forget_points(store: VectorStore, tenant: str, ids: list[str]) -> None:
    """Deleted points are no longer expected to be found."""
    integrity = integrity_of(store)
    marked = integrity.unverified.get(tenant)
    if marked is not None:
        for pid in ids:
            marked.pop(pid, None)
        if not marked:
            del integrity.unverified[tenant]
