"""A stateful property test of search against the vector store, on both backends.

Hypothesis drives a real store through bulk upserts, re-upserts of existing ids with new
vectors, new ids, deletes, optimize, close/reopen (embedded engine) and searches while a write
is in flight, over tenants of very different sizes (1, 5, 40, 500 and 2,500 points). A model
kept in numpy is the truth. After every search:

- it returns exactly min(limit, points matching tenant and filter), every one of them matching;
- its top 10 agrees with exact search (mean recall@10 over the run at least 0.95);
- every hit carries its point's current payload (the embedded engine's in-process payload cache,
  app/clients/vectorstore/payload_cache.py, must forget what every write touched);
- a search that runs while a write is in flight returns, for every passage, its state before or
  after the write, and never fewer than min(limit, unchanged matching points).

Writes go the way app/ingest.py writes (upsert, optimize, verify), so every written point must
be found first by its own vector: read your writes.

Each configuration runs twice: with the shipped settings, and with full_scan_threshold=10 KB
(the value the collection was created with before), which sends almost every filtered search
through graph traversal, where qdrant-edge 0.9.0 drops passages; the gateway's count check and
exact fallback (app/search.py) must keep every invariant there too. That run also gives the
payload cache 1 MiB, less than the points hold, so it evicts all along.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from app.clients.vectorstore import VectorStore, vectorstore_from_settings
from app.search import complete_search, forget_points, verify_writes
from app.settings import QdrantSettings
from app.types import Filters, PointIn, point_id

FILTER_KEYS = dict(QdrantSettings().filter_keys)

pytestmark = [
    pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning"),
    pytest.mark.filterwarnings("ignore:Local mode performs exact:UserWarning"),
]

DIM = 384
TENANTS = {"one": 1, "five": 5, "forty": 40, "mid": 500, "big": 2500}
TOPICS = [f"topic{i}" for i in range(7)]
SOURCES = ["blog", "docs", "forum"]
LIMITS = [1, 3, 10, 30, 100]
EF = 64


def _unit(v: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


class SearchMachine(RuleBasedStateMachine):
    backend = "edge"
    threshold_kb = 10_000
    payload_cache_mb = 64
    tmp: Path
    sizes = TENANTS

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.rng = np.random.default_rng(7)
        # clustered vectors (with near-duplicates across tenants), as real passages are
        self.centers = _unit(self.rng.normal(size=(12, DIM)))
        self.seq = itertools.count()
        self.run_id = next(_RUNS)
        self.settings = QdrantSettings(
            collection=f"sm{self.run_id}",
            path=self.tmp,
            url=":memory:" if self.backend == "server" else None,
            hnsw_m=8,
            hnsw_ef_construct=40,
            full_scan_threshold_kb=self.threshold_kb,
            payload_cache_mb=self.payload_cache_mb,
            filter_keys={**FILTER_KEYS, "year": "integer", "draft": "bool"},
        )
        self.store: VectorStore = vectorstore_from_settings(self.settings)
        # the truth: tenant -> point id -> (vector, payload)
        self.model: dict[str, dict[str, tuple[npt.NDArray[np.float32], dict[str, Any]]]] = {
            t: {} for t in TENANTS
        }
        self.recalls: list[float] = []
        self.await_(self.store.ensure_collection(DIM))
        self._write(
            [self._new_point(t) for t, n in self.sizes.items() for _ in range(n)],
            optimize=True,
        )

    def await_(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    # --- data -----------------------------------------------------------------------------

    def _vector(self) -> npt.NDArray[np.float32]:
        c = self.centers[self.rng.integers(len(self.centers))]
        return _unit(c + 0.25 * self.rng.normal(size=DIM))

    def _new_point(self, tenant: str) -> PointIn:
        doc_id = f"d{next(self.seq)}"
        return self._point(tenant, doc_id)

    def _point(self, tenant: str, doc_id: str) -> PointIn:
        payload = {
            "tenant": tenant,
            "doc_id": doc_id,
            "topic": TOPICS[int(self.rng.integers(len(TOPICS)))],
            "source": SOURCES[int(self.rng.integers(len(SOURCES)))],
            "text": f"passage {doc_id}",
            "year": int(self.rng.integers(2018, 2022)),
            "draft": bool(self.rng.integers(2)),
        }
        return PointIn(point_id(tenant, doc_id), self._vector(), payload)

    def _write(self, points: list[PointIn], optimize: bool) -> None:
        """As app/ingest.py writes: upsert, optimize, then every point searched back."""
        if not points:
            return
        self.await_(self.store.upsert(points))
        for p in points:
            self.model[p.payload["tenant"]][p.id] = (p.vector, p.payload)
        if optimize:
            self.await_(self.store.optimize())
        written: dict[str, dict[str, npt.NDArray[np.float32]]] = {}
        for p in points:
            written.setdefault(p.payload["tenant"], {})[p.id] = p.vector
        self.await_(verify_writes(self.store, written))
        # read your writes: each written point is found first by its own vector (a sample of a
        # bulk load: verify_writes above has already searched every one)
        for i in self.rng.choice(len(points), size=min(len(points), 40), replace=False):
            p = points[int(i)]
            got = self.await_(self._search(p.vector, 1, p.payload["tenant"], {}))
            assert got and (got[0].id == p.id or got[0].score >= 0.9999), (p.id, got)
            assert got[0].payload == self.model[got[0].payload["tenant"]][got[0].id][1], (p.id, got)

    def _matching(self, tenant: str, filters: Filters) -> dict[str, npt.NDArray[np.float32]]:
        def match(value: Any, wanted: Any) -> bool:  # strict: True is not 1
            return type(value) is type(wanted) and value == wanted

        return {
            pid: vec
            for pid, (vec, payload) in self.model[tenant].items()
            if all(any(match(payload.get(k), v) for v in vs) for k, vs in filters.items())
        }

    async def _search(
        self, vector: npt.NDArray[np.float32], limit: int, tenant: str, filters: Filters
    ) -> Any:
        return await complete_search(self.store, vector, limit, EF, tenant, filters)

    async def _forget(self, tenant: str, ids: list[str]) -> None:
        await forget_points(self.store, tenant, ids)

    def _pick_filter(self, kind: str, tenant: str) -> Filters:
        ids = list(self.model[tenant])
        if kind == "none" or not ids:
            return {}
        if kind == "one":
            return {"topic": [TOPICS[int(self.rng.integers(len(TOPICS)))]]}
        if kind == "typed":  # an integer key and a bool key
            return {"year": [int(self.rng.integers(2018, 2022))], "draft": [bool(self.rng.integers(2))]}
        if kind == "list":
            n = min(len(ids), 5)
            chosen = self.rng.choice(len(ids), size=n, replace=False)
            return {"doc_id": [self.model[tenant][ids[i]][1]["doc_id"] for i in chosen]}
        return {
            "topic": [TOPICS[int(self.rng.integers(len(TOPICS)))]],
            "source": [SOURCES[int(self.rng.integers(len(SOURCES)))]],
        }

    def _check(self, hits: Any, limit: int, tenant: str, filters: Filters, vector: Any) -> None:
        matching = self._matching(tenant, filters)
        assert len(hits) == min(limit, len(matching)), (tenant, filters, limit, len(hits), len(matching))
        assert all(h.id in matching for h in hits)
        for h in hits:
            assert h.payload == self.model[tenant][h.id][1], (h.id, h.payload)
        if matching:
            ids = list(matching)
            scores = np.stack([matching[i] for i in ids]) @ vector
            window = min(10, limit, len(ids))
            exact = {ids[i] for i in np.argsort(-scores)[:window]}
            self.recalls.append(len(exact & {h.id for h in hits[:window]}) / window)

    # --- rules ----------------------------------------------------------------------------

    @rule(tenant=st.sampled_from(list(TENANTS)), n=st.integers(1, 40), optimize=st.booleans())
    def upsert_new(self, tenant: str, n: int, optimize: bool) -> None:
        self._write([self._new_point(tenant) for _ in range(n)], optimize)

    @rule(tenant=st.sampled_from(list(TENANTS)), n=st.integers(1, 20), optimize=st.booleans())
    def reupsert_existing(self, tenant: str, n: int, optimize: bool) -> None:
        ids = [payload["doc_id"] for _, payload in self.model[tenant].values()][:n]
        self._write([self._point(tenant, doc_id) for doc_id in ids], optimize)

    @rule(tenant=st.sampled_from(list(TENANTS)), n=st.integers(1, 10))
    def delete(self, tenant: str, n: int) -> None:
        victims = list(self.model[tenant])[:n]
        if victims:
            self.await_(self.store.delete(victims))
            self.await_(self._forget(tenant, victims))  # as DELETE /documents does
            for pid in victims:
                del self.model[tenant][pid]

    @rule()
    def optimize(self) -> None:
        self.await_(self.store.optimize())

    @precondition(lambda self: self.backend == "edge")
    @rule()
    def reopen(self) -> None:
        integrity = getattr(self.store, "_integrity", None)
        self.await_(self.store.aclose())
        self.store = vectorstore_from_settings(self.settings)
        if integrity is not None:  # the process lives on; only the engine was reopened
            self.store._integrity = integrity  # type: ignore[attr-defined]

    @rule(
        tenant=st.sampled_from(list(TENANTS)),
        kind=st.sampled_from(["none", "one", "list", "two", "typed"]),
        limit=st.sampled_from(LIMITS),
    )
    def search(self, tenant: str, kind: str, limit: int) -> None:
        for _ in range(3):
            filters = self._pick_filter(kind, tenant)
            vector = self._vector()
            hits = self.await_(self._search(vector, limit, tenant, filters))
            self._check(hits, limit, tenant, filters, vector)

    @rule(tenant=st.sampled_from(list(TENANTS)), n=st.integers(1, 30), limit=st.sampled_from(LIMITS))
    def search_during_write(self, tenant: str, n: int, limit: int) -> None:
        before = {pid: payload for pid, (_, payload) in self.model[tenant].items()}
        existing = [payload["doc_id"] for payload in before.values()][: n // 2]
        points = [self._point(tenant, d) for d in existing] + [
            self._new_point(tenant) for _ in range(n - len(existing))
        ]
        changed = {p.id: p.payload for p in points}
        vector = self._vector()

        async def race() -> list[Any]:
            write = asyncio.ensure_future(self.store.upsert(points))
            results = [await self._search(vector, limit, tenant, {}) for _ in range(3)]
            await write
            return results

        results = self.await_(race())
        unchanged = len(set(before) - set(changed))
        for hits in results:
            assert len(hits) >= min(limit, unchanged)
            for h in hits:
                assert h.payload in (before.get(h.id), changed.get(h.id)), (h.id, h.payload)
                assert h.payload["tenant"] == tenant
        for p in points:
            self.model[tenant][p.id] = (p.vector, p.payload)
        self.await_(self.store.optimize())
        self.await_(verify_writes(self.store, {tenant: {p.id: p.vector for p in points}}))

    @invariant()
    def mean_recall(self) -> None:
        if len(self.recalls) >= 20:
            assert float(np.mean(self.recalls)) >= 0.95, np.mean(self.recalls)

    def teardown(self) -> None:
        try:
            self.await_(self.store.aclose())
        finally:
            self.loop.close()


_RUNS = itertools.count()


# qdrant-client's local mode searches exactly: the threshold means nothing there
@pytest.mark.parametrize(
    ("backend", "threshold_kb"),
    [("edge", 10_000), ("edge", 10), ("server", 10_000)],
    ids=["edge-default-threshold", "edge-graph-heavy", "server"],
)
def test_search_never_drops_passages(backend: str, threshold_kb: int, tmp_path: Path) -> None:
    attrs: dict[str, Any] = {"backend": backend, "threshold_kb": threshold_kb, "tmp": tmp_path}
    if threshold_kb == 10:
        attrs["payload_cache_mb"] = 1  # less than the points' payloads: evicting all along
    if backend == "server":
        # local mode filters in Python, point by point: the same code paths on fewer points
        attrs["sizes"] = {**TENANTS, "mid": 100, "big": 300}
    machine = type(f"{backend}_{threshold_kb}", (SearchMachine,), attrs)
    run = machine.TestCase
    run.settings = settings(
        max_examples=3 if backend == "server" else 5,
        stateful_step_count=12,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    run().runTest()
