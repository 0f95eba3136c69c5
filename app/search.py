"""Search that never silently drops passages (docs/ARCHITECTURE.md, "Search integrity").

The vector store answers from its HNSW index. Two checks keep it honest, both cheap:

- **Counts.** A search that returns fewer than `k` hits is compared with the number of points
  that match the tenant and filter (a count through the payload index). If more match, the
  search is repeated exactly and that answer is served; when it holds points the index left out,
  `rag_search_exact_fallback_total{reason="short"}` counts it.
- **Writes verified.** After every write (`app/ingest.py`), each written point is searched with
  its own vector under its tenant's filter at the serving `ef`, and must come back first; a point
  the index cannot find (and that still exists) marks its tenant, whose searches are then exact
  (`reason="unverified_write"`) until a later check finds every marked point again. So a write
  that returns is the first answer to its own text at the next search, whatever the engine's
  graph does. The marks live in the process that wrote: another replica, or this one after a
  restart, does not know them (README, "Search never drops passages").

The log says either at most once a minute; the RUNBOOK says what to do when the counter climbs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

from app.clients.vectorstore import VectorStore
from app.settings import QdrantSettings
from app.types import Candidate, Filters

log = logging.getLogger("rag.search")
VERIFY_LIMIT = 10
# the serving default ef (RAG_QDRANT__EF_DEFAULT's default); writers pass the configured one
VERIFY_EF: int = QdrantSettings.model_fields["ef_default"].default
SAME_VECTOR = 0.9999  # cosine of a point with its own vector, give or take float rounding


class SearchIntegrity:
    """Per store: the points written but not found by their own vectors (by tenant), and the log
    throttle. Marks change point by point, under one lock shared by every check and delete, so
    concurrent writes and deletes cannot erase or resurrect each other's marks."""

    def __init__(self, log_interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        # tenant -> point id -> vector, for points written but not found by their own vector
        self.unverified: dict[str, dict[str, npt.NDArray[np.float32]]] = {}
        self.lock = asyncio.Lock()
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

    def mark(self, tenant: str, lost: dict[str, npt.NDArray[np.float32]]) -> None:
        if lost:
            self.unverified.setdefault(tenant, {}).update(lost)

    def clear(self, tenant: str, ids: Iterable[str]) -> None:
        marked = self.unverified.get(tenant)
        if marked is None:
            return
        for pid in ids:
            marked.pop(pid, None)
        if not marked:
            del self.unverified[tenant]


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
    on_fallback: Callable[[str], None] | None = None,
) -> list[Candidate]:
    """`store.search`, but never fewer hits than match, and exact for an unverified tenant.

    The caller guards the whole of it as one dependency call (deadline, breaker, retry).
    """
    integrity = integrity_of(store)
    if tenant in integrity.unverified:
        _fallback(integrity, on_fallback, "unverified_write", tenant)
        return await store.search(vector, k, ef, tenant, filters, True)
    hits = await store.search(vector, k, ef, tenant, filters)
    if len(hits) < k and await store.count(tenant, filters) > len(hits):
        exact = await store.search(vector, k, ef, tenant, filters, True)
        # a write landing between the search and the count can make a full answer look short:
        # only an exact answer with points the index left out says the index was wrong
        if {h.id for h in exact} - {h.id for h in hits}:
            _fallback(integrity, on_fallback, "short", tenant, got=len(hits), exact=len(exact))
        return exact
    return hits


def _fallback(
    integrity: SearchIntegrity, on_fallback: Callable[[str], None] | None, reason: str, tenant: str, **kw: Any
) -> None:
    if on_fallback is not None:
        on_fallback(reason)
    integrity.note(reason, tenant=tenant, **kw)


async def verify_writes(
    store: VectorStore, written: dict[str, dict[str, npt.NDArray[np.float32]]], ef: int = VERIFY_EF
) -> dict[str, int]:
    """Search every written point (tenant -> {point id: vector}), and every point still marked
    from earlier writes, with its own vector through the index at `ef` (the serving default):
    each must come back first, or tied first with an identical vector. Returns tenant -> points
    missed. A tenant with marked points is searched exactly until a later call finds them all.
    """
    integrity = integrity_of(store)
    missed: dict[str, int] = {}
    async with integrity.lock:
        todo: dict[str, dict[str, npt.NDArray[np.float32]]] = {}
        for tenant, points in [*((t, dict(p)) for t, p in integrity.unverified.items()), *written.items()]:
            todo.setdefault(tenant, {}).update(points)
        for tenant, points in todo.items():
            ids = list(points)
            found = await store.nearest_ids(np.stack([points[i] for i in ids]), VERIFY_LIMIT, ef, tenant)
            lost = {pid: points[pid] for pid, hits in zip(ids, found, strict=True) if not _first(pid, hits)}
            if lost:
                # a point deleted since it was written is not lost: it is gone
                present = await store.existing(list(lost))
                lost = {pid: v for pid, v in lost.items() if pid in present}
            integrity.clear(tenant, (pid for pid in ids if pid not in lost))
            integrity.mark(tenant, lost)
            if lost:
                missed[tenant] = len(lost)
                integrity.note("unverified_write", tenant=tenant, missed=len(lost), checked=len(points))
    return missed


def _first(pid: str, hits: list[tuple[str, float]]) -> bool:
    """The point is the first answer to its own vector, or tied first with identical vectors."""
    if not hits:
        return False
    if hits[0][0] == pid:
        return True
    top = [hid for hid, score in hits if score >= SAME_VECTOR]
    # exact duplicates can fill every place ahead of it: a tie, not a miss
    return hits[0][1] >= SAME_VECTOR and (pid in top or len(top) == VERIFY_LIMIT)


async def forget_points(store: VectorStore, tenant: str, ids: list[str]) -> None:
    """Deleted points are no longer expected to be found (after a check in progress is done)."""
    integrity = integrity_of(store)
    async with integrity.lock:
        integrity.clear(tenant, ids)


DISTINCT_MAX_FETCH = 1600  # chunks fetched at most to find top_n distinct documents


async def distinct_docs_search(
    search: Callable[[int], Awaitable[list[Candidate]]], k: int, n: int
) -> list[Candidate]:
    """At most one candidate per `doc_id` (its best-scoring chunk), up to `k` of them: searches
    again with a larger limit while fewer than `n` documents were found and more chunks match,
    up to DISTINCT_MAX_FETCH chunks."""
    limit = k
    while True:
        found = await search(limit)
        best: dict[Any, Candidate] = {}
        for c in found:  # in score order: the first chunk of a document is its best
            best.setdefault(c.payload.get("doc_id", c.id), c)
        if len(best) >= n or len(found) < limit or limit >= DISTINCT_MAX_FETCH:
            return list(best.values())[:k]
        limit = min(limit * 4, DISTINCT_MAX_FETCH)
