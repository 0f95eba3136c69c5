"""The two backends agree (qdrant-client's tests/congruence_tests are the model): the same random
writes (upserts, re-upserts with new vectors, deletes) go to an EdgeStore (the embedded engine)
and to a ServerStore (qdrant-client's local mode), then the same reads are asked of both and
their answers compared: counts, `existing` and `payloads` exactly; searches (exact, and HNSW at
a high ef on data this small) and `nearest_ids` by ids and order wherever scores differ by more
than EPS, and by scores within EPS; `info()` by point count and vector parameters."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from app.clients.vectorstore import EdgeStore, ServerStore, VectorStore
from app.settings import QdrantSettings
from app.types import Candidate, Filters, PointIn, point_id

pytestmark = [
    pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning"),
    pytest.mark.filterwarnings("ignore:Local mode performs exact:UserWarning"),
]

DIM = 8
EF = 256  # far above the number of points: the graph search must find the exact answer
EPS = 1e-4
TENANTS = ["a", "b"]
DOCS = 20
TOPICS = ["alpha", "beta", "gamma"]
YEARS = [2020, 2021, 2022]
FILTER_KEYS: dict[str, Any] = {"topic": "keyword", "year": "integer", "draft": "bool"}

# a write: ("upsert", seed, [(tenant, doc)]) or ("delete", 0, [(tenant, doc)])
points_of = st.lists(st.tuples(st.sampled_from(TENANTS), st.integers(0, DOCS - 1)), min_size=1, max_size=12)
writes = st.lists(
    st.tuples(st.sampled_from(["upsert", "upsert", "delete"]), st.integers(0, 2**16), points_of),
    min_size=1,
    max_size=4,
)
filters_of: st.SearchStrategy[dict[str, list[Any]]] = st.one_of(
    st.just({}),
    st.builds(lambda t: {"topic": [t]}, st.sampled_from(TOPICS)),  # one key, one value
    st.builds(lambda ts: {"topic": sorted(ts)}, st.sets(st.sampled_from(TOPICS), min_size=2)),  # a list
    st.builds(lambda t, y: {"topic": [t], "year": [y]}, st.sampled_from(TOPICS), st.sampled_from(YEARS)),
    st.builds(lambda d: {"draft": [d]}, st.booleans()),
    st.builds(lambda ys: {"year": sorted(ys)}, st.sets(st.sampled_from(YEARS), min_size=2)),
)
# a read: (query seed, tenant, filters, k, exact)
reads = st.lists(
    st.tuples(
        st.integers(0, 2**16),
        st.sampled_from([*TENANTS, "nobody"]),
        filters_of,
        st.integers(1, 30),
        st.booleans(),
    ),
    min_size=1,
    max_size=6,
)


def vectors(seed: int, n: int) -> npt.NDArray[np.float32]:
    v = np.random.default_rng(seed).normal(size=(n, DIM))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def make_points(seed: int, targets: list[tuple[str, int]]) -> list[PointIn]:
    out = []
    for (tenant, doc), v in zip(dict.fromkeys(targets), vectors(seed, len(targets)), strict=False):
        payload = {
            "tenant": tenant,
            "doc_id": f"doc-{doc}",
            "topic": TOPICS[(doc + seed) % len(TOPICS)],
            "year": YEARS[(doc * 7 + seed) % len(YEARS)],
            "draft": (doc + seed) % 2 == 0,
            "text": f"passage {doc} of {tenant}, version {seed}",
        }
        out.append(PointIn(point_id(tenant, f"doc-{doc}"), v, payload))
    return out


def assert_same_ranking(edge: list[tuple[str, float]], server: list[tuple[str, float]]) -> None:
    """Same length, scores within EPS, and the same ids in the same order except among hits whose
    scores are within EPS of each other (there either backend may break the tie)."""
    assert len(edge) == len(server)
    assert [s for _, s in edge] == pytest.approx([s for _, s in server], abs=EPS)
    start = 0
    for i in range(1, len(edge) + 1):
        if i == len(edge) or edge[i - 1][1] - edge[i][1] > EPS:
            if i < len(edge):  # a tie at the end of the list may be cut differently
                assert {x for x, _ in edge[start:i]} == {x for x, _ in server[start:i]}
            start = i


def ranked(hits: list[Candidate]) -> list[tuple[str, float]]:
    return [(h.id, h.score) for h in hits]


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


async def both(stores: tuple[VectorStore, VectorStore], call: str, *args: Any) -> tuple[Any, Any]:
    edge, server = stores
    return await getattr(edge, call)(*args), await getattr(server, call)(*args)


async def congruent(ops: list[tuple[str, int, list[tuple[str, int]]]], queries: list[Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        s = QdrantSettings(collection="cong", path=Path(tmp), filter_keys=FILTER_KEYS, hnsw_m=8)
        stores = (EdgeStore(s), ServerStore.from_settings(s.model_copy(update={"url": ":memory:"})))
        try:
            assert await both(stores, "ensure_collection", DIM) == (True, True)
            for kind, seed, targets in ops:
                if kind == "upsert":
                    await both(stores, "upsert", make_points(seed, targets))
                else:
                    await both(stores, "delete", [point_id(t, f"doc-{d}") for t, d in targets])
                await both(stores, "optimize")
            await check_reads(stores, queries)
        finally:
            await asyncio.gather(*(x.aclose() for x in stores))


async def check_reads(stores: tuple[VectorStore, VectorStore], queries: list[Any]) -> None:
    edge_info, server_info = await both(stores, "info")
    assert edge_info["points_count"] == server_info["points_count"]
    assert edge_info["config"]["params"] == server_info["config"]["params"]
    every = [point_id(t, f"doc-{d}") for t in TENANTS for d in range(DOCS)]
    edge_ids, server_ids = await both(stores, "existing", every)
    assert edge_ids == server_ids
    edge_payloads, server_payloads = await both(stores, "payloads", every)
    assert edge_payloads == server_payloads and set(edge_payloads) == edge_ids
    assert edge_info["points_count"] == len(edge_ids)
    for seed, tenant, filters, k, exact in queries:
        flt: Filters = filters
        query = vectors(seed, 1)[0]
        edge, server = await both(stores, "search", query, k, EF, tenant, flt, exact)
        assert_same_ranking(ranked(edge), ranked(server))
        payloads = {h.id: h.payload for h in server}
        assert all(h.payload == payloads[h.id] for h in edge if h.id in payloads)
        assert all(h.payload["tenant"] == tenant for h in edge)
        edge_n, server_n = await both(stores, "count", tenant, flt)
        assert edge_n == server_n and len(edge) == min(k, edge_n)
    edge_n, server_n = await both(stores, "count")
    assert edge_n == server_n == len(edge_ids)
    many = vectors(queries[0][0] + 1, 5)
    for tenant in TENANTS:
        edge_near, server_near = await both(stores, "nearest_ids", many, 7, EF, tenant)
        assert len(edge_near) == len(server_near) == len(many)
        for e, s in zip(edge_near, server_near, strict=True):
            assert_same_ranking(e, s)


@settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    # no shrinking: every example builds two collections, so shrinking a failure would take
    # minutes; the failing example is reported as found
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=writes, queries=reads)
def test_edge_and_server_agree(
    loop: asyncio.AbstractEventLoop, ops: list[tuple[str, int, list[tuple[str, int]]]], queries: list[Any]
) -> None:
    loop.run_until_complete(congruent(ops, queries))
