"""The vector store, both backends through the same tests: the embedded Qdrant engine
(qdrant-edge) on a temporary directory, and ServerStore over qdrant-client's local mode
(`RAG_QDRANT__URL=":memory:"`). Small random corpora (< 300 points) with known geometry."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from qdrant_client import models

from app.clients.vectorstore import (
    EdgeStore,
    ServerStore,
    VectorStore,
    vectorstore_from_settings,
)
from app.errors import (
    DependencyError,
    DependencyRejected,
    DependencyTimeout,
    DependencyUnavailable,
    InputRejected,
)
from app.settings import QdrantSettings
from app.types import PointIn, point_id

pytestmark = [
    # qdrant-client's local mode warns that it ignores payload indexes and search params
    pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning"),
    pytest.mark.filterwarnings("ignore:Local mode performs exact:UserWarning"),
    # the client's background version check against the test's dead or fake servers
    pytest.mark.filterwarnings("ignore:Failed to obtain server version:UserWarning"),
]

DIM = 16
TENANT_INDEX = {"data_type": "keyword", "params": {"type": "keyword", "is_tenant": True}}
TOPICS = ["alpha", "beta", "gamma"]
BACKENDS = ["edge", "server"]


class RecordingClient:
    """Delegates to the real AsyncQdrantClient and records the collection-schema calls, which
    local mode accepts but does not keep (it has no HNSW and no payload indexes)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name not in {"create_collection", "create_payload_index"}:
            return attr

        def record(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            return attr(*args, **kwargs)

        return record


def settings_for(backend: str, tmp_path: Path, **overrides: Any) -> QdrantSettings:
    base: dict[str, Any] = {"collection": "t_docs", "path": tmp_path / "qdrant"}
    if backend == "server":
        base["url"] = ":memory:"
    return QdrantSettings(**{**base, **overrides})


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def store(backend: str, tmp_path: Path) -> AsyncIterator[VectorStore]:
    s = vectorstore_from_settings(settings_for(backend, tmp_path))
    assert isinstance(s, EdgeStore if backend == "edge" else ServerStore)
    if isinstance(s, ServerStore):
        s._client = RecordingClient(s._client)
    try:
        yield s
    finally:
        await s.aclose()


def unit(v: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    return (v / np.linalg.norm(v)).astype(np.float32)


def make_points(
    tenant: str, n: int, seed: int, prefix: str = "doc"
) -> tuple[list[PointIn], dict[str, npt.NDArray[np.float32]]]:
    """`n` random unit vectors for one tenant; doc ids `<prefix>-<i>`; topic cycles over TOPICS."""
    rng = np.random.default_rng(seed)
    points, vectors = [], {}
    for i in range(n):
        doc_id = f"{prefix}-{i}"
        v = unit(rng.normal(size=DIM))
        payload = {
            "text": f"passage {i} of {tenant}",
            "doc_id": doc_id,
            "tenant": tenant,
            "topic": TOPICS[i % len(TOPICS)],
            "rank": i,
            "source": "test",
        }
        points.append(PointIn(point_id(tenant, doc_id), v, payload))
        vectors[doc_id] = v
    return points, vectors


async def load(store: VectorStore, *batches: list[PointIn], optimize: bool = True) -> None:
    await store.ensure_collection(DIM)
    for batch in batches:
        await store.upsert(batch)
    if optimize:  # builds the HNSW graph on the embedded engine (slow-ish: skip it where moot)
        await store.optimize()


def nearest(query: npt.NDArray[np.float32], points: list[PointIn]) -> list[str]:
    """Exact cosine ranking of `points` for `query` (the vectors are unit length)."""
    scored = sorted(points, key=lambda p: float(np.dot(query, p.vector)), reverse=True)
    return [p.id for p in scored]


# --- collection schema -------------------------------------------------------------------


async def test_ensure_collection_is_idempotent(store: VectorStore) -> None:
    assert await store.ensure_collection(DIM) is True
    first = await store.info()
    points, _ = make_points("a", 10, seed=1)
    await store.upsert(points)
    # a second call neither recreates nor alters the collection; another size is refused
    assert await store.ensure_collection(DIM) is False
    with pytest.raises(DependencyRejected, match=f"holds {DIM}-dim vectors"):
        await store.ensure_collection(DIM * 2)
    after = await store.info()
    assert after["config"] == first["config"]
    assert after["config"]["params"]["vectors"]["size"] == DIM
    assert await store.count() == 10


async def test_a_collection_records_its_embedder_and_refuses_another(store: VectorStore) -> None:
    await store.check_embedder("m@1")  # no collection yet: nothing to check, nothing recorded
    assert await store.ensure_collection(DIM, "m@1") is True
    assert await store.ensure_collection(DIM, "m@1") is False
    await store.check_embedder("m@1")
    with pytest.raises(DependencyRejected, match="embedded by m@1 but this gateway embeds with m:int8@2"):
        await store.check_embedder("m:int8@2")
    with pytest.raises(DependencyRejected, match="embedded by m@1"):
        await store.ensure_collection(DIM, "m:int8@2")


async def test_a_collection_that_recorded_no_embedder_takes_the_first(store: VectorStore) -> None:
    assert await store.ensure_collection(DIM) is True  # made as before collections recorded it
    await store.check_embedder("m@1")
    with pytest.raises(DependencyRejected, match="embedded by m@1"):
        await store.check_embedder("m@2")


@pytest.mark.parametrize("content", [b"[1]", b'"m@1"', b"{}", b'{"embedder": 5}', b"{not json", b"\xff\xfe"])
async def test_an_unusable_embedder_record_is_refused_not_taken_for_none(
    tmp_path: Path, content: bytes
) -> None:
    s = EdgeStore.from_settings(settings_for("edge", tmp_path))
    try:
        assert await s.ensure_collection(DIM, "m@1") is True
        (s.path / "gateway.json").write_bytes(content)
        with pytest.raises(DependencyRejected, match=r"gateway\.json cannot be used .*remove it"):
            await s.check_embedder("m@2")
    finally:
        await s.aclose()


async def test_edge_collection_survives_reopen(tmp_path: Path) -> None:
    s = EdgeStore.from_settings(settings_for("edge", tmp_path))
    assert await s.ensure_collection(DIM) is True
    points, _ = make_points("a", 12, seed=2)
    await s.upsert(points)
    await s.optimize()
    await s.aclose()
    again = EdgeStore.from_settings(settings_for("edge", tmp_path))
    try:
        assert await again.ensure_collection(DIM) is False
        assert await again.count() == 12
        await again.check_embedder("m@1")  # recorded beside the engine's files; it still opens
    finally:
        await again.aclose()
    third = EdgeStore.from_settings(settings_for("edge", tmp_path))
    try:
        assert await third.count() == 12
        with pytest.raises(DependencyRejected, match="embedded by m@1"):
            await third.check_embedder("m@2")
    finally:
        await again.aclose()


async def test_schema_hnsw_and_tenant_index(store: VectorStore, backend: str) -> None:
    """The collection schema: HNSW m=32 / ef_construct=200 and a keyword index on `tenant` with
    is_tenant. The embedded engine reports them back; qdrant-client's local mode does not keep
    them, so for the server backend the test checks what the store asked the server to create."""
    points, _ = make_points("a", 40, seed=4)
    await load(store, points)
    info = await store.info()
    # the shape of Qdrant's GET /collections/<name> result
    assert set(info) == {
        "status",
        "points_count",
        "indexed_vectors_count",
        "segments_count",
        "config",
        "payload_schema",
    }
    # the engine reports no status (it has no background optimizer); a server reports its own
    assert info["status"] == (None if backend == "edge" else "green")
    assert info["points_count"] == 40
    assert info["config"]["params"]["vectors"] == {"size": DIM, "distance": "Cosine"}
    assert set(info["config"]["hnsw_config"]) == {"m", "ef_construct"}
    assert isinstance(info["payload_schema"], dict)
    if backend == "edge":
        assert info["config"]["hnsw_config"] == {"m": 32, "ef_construct": 200}
        keyword = {"data_type": "keyword", "params": {"type": "keyword"}}
        # every allow-listed filter key is indexed (issue: selective filters came back short)
        assert info["payload_schema"] == {
            "tenant": {**TENANT_INDEX, "points": 40},
            "source": {**keyword, "points": 40},
            "doc_id": {**keyword, "points": 40},
            "topic": {**keyword, "points": 40},
            "lang": {**keyword, "points": 0},
        }
    else:
        assert isinstance(store, ServerStore)
        calls = store._client.calls
        assert [c[0] for c in calls] == ["create_collection"] + ["create_payload_index"] * 5
        indexed = {c[1][1]: c[2]["field_schema"] for c in calls[2:]}
        assert indexed == dict.fromkeys(
            ["source", "doc_id", "topic", "lang"], models.PayloadSchemaType.KEYWORD
        )
        create = calls[0][2]
        assert create["vectors_config"] == models.VectorParams(size=DIM, distance=models.Distance.COSINE)
        assert create["hnsw_config"].m == 32
        assert create["hnsw_config"].ef_construct == 200
        _, index_args, index_kwargs = calls[1]
        assert index_args[1] == "tenant"
        schema = index_kwargs["field_schema"]
        assert schema.type == models.KeywordIndexType.KEYWORD
        assert schema.is_tenant is True


async def test_hnsw_settings_flow_from_settings(backend: str, tmp_path: Path) -> None:
    s = vectorstore_from_settings(settings_for(backend, tmp_path, hnsw_m=12, hnsw_ef_construct=64))
    if isinstance(s, ServerStore):
        s._client = RecordingClient(s._client)
    try:
        await s.ensure_collection(DIM)
        if isinstance(s, EdgeStore):
            # info() must report what the engine stored, not the settings of whoever asks: the
            # store's own settings are swapped for the defaults (32/200) before asking
            s._s = settings_for(backend, tmp_path)
            points, _ = make_points("a", 40, seed=3)
            await load(s, points)
            info = await s.info()
            assert info["config"]["hnsw_config"] == {"m": 12, "ef_construct": 64}
            assert info["config"]["params"]["vectors"] == {"size": DIM, "distance": "Cosine"}
            assert info["points_count"] == info["indexed_vectors_count"] == 40
            assert info["status"] is None  # the engine reports none
        else:
            hnsw = s._client.calls[0][2]["hnsw_config"]
            assert (hnsw.m, hnsw.ef_construct) == (12, 64)
    finally:
        await s.aclose()


async def test_edge_builds_the_hnsw_graph(tmp_path: Path) -> None:
    """Upserts land in an unindexed segment; optimize() builds HNSW over every point."""
    s = EdgeStore.from_settings(settings_for("edge", tmp_path))
    try:
        await s.ensure_collection(DIM)
        points, _ = make_points("a", 250, seed=5)
        await s.upsert(points)
        before = await s.info()
        assert before["points_count"] == 250
        assert before["indexed_vectors_count"] < 250
        await s.optimize()
        after = await s.info()
        assert after["points_count"] == 250
        assert after["indexed_vectors_count"] == after["points_count"]
    finally:
        await s.aclose()


async def test_server_info_translates_a_server_answer(tmp_path: Path) -> None:
    """ServerStore.info() on the answer of a real server's GET /collections/<name> (as
    qdrant-client parses it) gives the same plain-JSON shape as the embedded engine."""
    answer = {
        "status": "yellow",
        "optimizer_status": "ok",
        "indexed_vectors_count": 900,
        "points_count": 1000,
        "segments_count": 4,
        "config": {
            "params": {
                "vectors": {"size": 384, "distance": "Cosine"},
                "shard_number": 1,
                "replication_factor": 1,
                "write_consistency_factor": 1,
                "on_disk_payload": True,
            },
            "hnsw_config": {"m": 32, "ef_construct": 200, "full_scan_threshold": 10000},
            "optimizer_config": {"default_segment_number": 0, "flush_interval_sec": 5},
            "wal_config": {"wal_capacity_mb": 32, "wal_segments_ahead": 0},
        },
        "payload_schema": {"tenant": {**TENANT_INDEX, "points": 1000}},
    }

    class OneAnswer:
        async def get_collection(self, name: str) -> models.CollectionInfo:
            return models.CollectionInfo.model_validate(answer)

    s = ServerStore(settings_for("server", tmp_path), OneAnswer())
    info = await s.info()
    assert info == {
        "status": "yellow",
        "points_count": 1000,
        "indexed_vectors_count": 900,
        "segments_count": 4,
        "config": {
            "params": {"vectors": {"size": 384, "distance": "Cosine"}},
            "hnsw_config": {"m": 32, "ef_construct": 200},
        },
        "payload_schema": {"tenant": {**TENANT_INDEX, "points": 1000}},
    }


# --- search, tenants, filters ------------------------------------------------------------


@dataclass
class Loaded:
    """One collection per backend for the read-only tests: tenants a and b, 60 points each,
    with the same doc ids and different vectors."""

    store: VectorStore
    points: dict[str, list[PointIn]]
    vectors: dict[str, dict[str, npt.NDArray[np.float32]]]


@pytest.fixture(scope="module", params=BACKENDS)
async def loaded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Loaded]:
    s = vectorstore_from_settings(settings_for(str(request.param), tmp_path_factory.mktemp("loaded")))
    a_points, a_vectors = make_points("a", 60, seed=8)
    b_points, b_vectors = make_points("b", 60, seed=9)
    await load(s, a_points, b_points)
    try:
        yield Loaded(s, {"a": a_points, "b": b_points}, {"a": a_vectors, "b": b_vectors})
    finally:
        await s.aclose()


async def test_search_finds_nearest_with_payload(loaded: Loaded) -> None:
    points, vectors = loaded.points["a"], loaded.vectors["a"]
    query = vectors["doc-17"]
    hits = await loaded.store.search(query, 5, 128, "a", {})
    assert [h.id for h in hits] == nearest(query, points)[:5]
    top = hits[0]
    assert top.id == point_id("a", "doc-17")
    assert top.score == pytest.approx(1.0, abs=1e-5)
    assert top.payload["doc_id"] == "doc-17"
    assert top.payload["rank"] == 17
    assert top.text == "passage 17 of a"
    assert all(x.score >= y.score for x, y in itertools.pairwise(hits))


async def test_k_is_respected(loaded: Loaded) -> None:
    query = loaded.vectors["a"]["doc-0"]
    for k in (1, 3, 25):
        assert len(await loaded.store.search(query, k, 64, "a", {})) == k
    # more than the tenant has: all of them, once each
    hits = await loaded.store.search(query, 200, 256, "a", {})
    assert len(hits) == 60
    assert len({h.id for h in hits}) == 60


async def test_tenants_are_isolated(loaded: Loaded) -> None:
    store = loaded.store
    a_points, b_points = loaded.points["a"], loaded.points["b"]
    assert {p.payload["doc_id"] for p in a_points} == {p.payload["doc_id"] for p in b_points}
    a_ids = {p.id for p in a_points}
    b_ids = {p.id for p in b_points}
    assert a_ids.isdisjoint(b_ids)
    assert await store.count() == 120
    assert await store.count("a") == 60
    assert await store.count("b") == 60
    assert await store.count("nobody") == 0
    assert await store.count("") == 0  # an empty tenant is a tenant with no points, not "all"
    # tenant b's own vector is the exact match, yet a search as tenant a never returns it
    for doc_id in ("doc-0", "doc-21", "doc-59"):
        hits = await store.search(loaded.vectors["b"][doc_id], 100, 256, "a", {})
        assert len(hits) == 60
        assert {h.id for h in hits} == a_ids
        assert all(h.payload["tenant"] == "a" for h in hits)
    hits = await store.search(loaded.vectors["b"]["doc-21"], 1, 128, "b", {})
    assert hits[0].id == point_id("b", "doc-21")
    assert hits[0].payload["tenant"] == "b"
    assert await store.search(loaded.vectors["a"]["doc-3"], 10, 64, "nobody", {}) == []


async def test_filter_match_value(loaded: Loaded) -> None:
    store, points, query = loaded.store, loaded.points["a"], loaded.vectors["a"]["doc-1"]
    hits = await store.search(query, 100, 256, "a", {"topic": ["beta"]})
    expected = {p.id for p in points if p.payload["topic"] == "beta"}
    assert {h.id for h in hits} == expected
    assert len(hits) == 20
    # an integer payload value
    hits = await store.search(query, 10, 64, "a", {"rank": [7]})
    assert [h.payload["doc_id"] for h in hits] == ["doc-7"]
    # two conditions are ANDed (doc-7 is about "beta"), and the tenant still applies
    hits = await store.search(query, 10, 64, "a", {"topic": ["beta"], "rank": [7]})
    assert [h.id for h in hits] == [point_id("a", "doc-7")]
    assert await store.search(query, 10, 64, "a", {"topic": ["alpha"], "rank": [7]}) == []
    assert await store.search(query, 10, 64, "a", {"topic": ["nothing"]}) == []


async def test_filter_match_any(loaded: Loaded) -> None:
    store, points, query = loaded.store, loaded.points["a"], loaded.vectors["a"]["doc-2"]
    hits = await store.search(query, 100, 256, "a", {"topic": ["alpha", "gamma"]})
    expected = {p.id for p in points if p.payload["topic"] in {"alpha", "gamma"}}
    assert {h.id for h in hits} == expected
    assert len(hits) == 40
    hits = await store.search(query, 100, 256, "b", {"doc_id": ["doc-4", "doc-9", "doc-x"]})
    assert sorted(h.id for h in hits) == sorted([point_id("b", "doc-4"), point_id("b", "doc-9")])


async def test_upsert_overwrites_the_same_point(store: VectorStore) -> None:
    points, vectors = make_points("a", 20, seed=12)
    await load(store, points, optimize=False)
    changed = PointIn(points[5].id, points[5].vector, {**points[5].payload, "text": "rewritten"})
    await store.upsert([changed])
    assert await store.count("a") == 20
    hits = await store.search(vectors["doc-5"], 1, 64, "a", {})
    assert hits[0].text == "rewritten"


async def test_delete(store: VectorStore) -> None:
    points, vectors = make_points("a", 30, seed=13)
    others, _ = make_points("b", 30, seed=14)
    await load(store, points, others)
    gone = [point_id("a", f"doc-{i}") for i in (0, 1, 2)]
    await store.delete(gone)
    await store.delete([point_id("a", "never-there")])
    await store.optimize()
    assert await store.count("a") == 27
    assert await store.count("b") == 30
    hits = await store.search(vectors["doc-0"], 100, 256, "a", {})
    assert len(hits) == 27
    assert not {h.id for h in hits} & set(gone)


# --- errors ------------------------------------------------------------------------------


async def test_missing_collection_is_unavailable(store: VectorStore) -> None:
    query = unit(np.ones(DIM))
    with pytest.raises(DependencyUnavailable):
        await store.search(query, 5, 64, "a", {})
    with pytest.raises(DependencyUnavailable):
        await store.count()
    with pytest.raises(DependencyUnavailable):
        await store.ping()
    with pytest.raises(DependencyUnavailable):
        await store.info()


async def test_dropped_collection_is_unavailable_then_recreated(store: VectorStore) -> None:
    points, vectors = make_points("a", 10, seed=15)
    await load(store, points, optimize=False)
    await store.ping()
    await store.drop()
    with pytest.raises(DependencyUnavailable):
        await store.search(vectors["doc-0"], 5, 64, "a", {})
    assert await store.ensure_collection(DIM) is True
    assert await store.count() == 0


async def test_a_filter_value_the_backend_refuses_is_input_rejected(loaded: Loaded) -> None:
    """Mixed types in one key's values, a float: refused by the engine's binding or by
    qdrant-client's models. The caller's fault on both backends: InputRejected (422), which the
    breaker does not count."""
    query = loaded.vectors["a"]["doc-0"]
    bad: list[dict[str, Any]] = [{"topic": ["alpha", 5]}, {"rank": [1.5]}]
    for filters in bad:
        with pytest.raises(InputRejected) as err:
            await loaded.store.search(query, 5, 64, "a", filters)
        assert not err.value.counts_as_failure
        with pytest.raises(InputRejected):
            await loaded.store.count("a", filters)
    assert await loaded.store.count("a") == 60  # and the store still answers


async def test_upsert_of_wrong_dimension_is_a_dependency_error(store: VectorStore) -> None:
    await store.ensure_collection(DIM)
    bad = PointIn(point_id("a", "x"), unit(np.ones(DIM + 3)), {"tenant": "a"})
    with pytest.raises(DependencyError):
        await store.upsert([bad])


async def test_server_store_dead_port_is_unavailable(dead_port: int) -> None:
    s = ServerStore.from_settings(QdrantSettings(url=f"http://127.0.0.1:{dead_port}", timeout_s=1))
    query = unit(np.ones(DIM))
    calls = [
        lambda: s.search(query, 5, 64, "a", {}),
        lambda: s.ensure_collection(DIM),
        lambda: s.count("a"),
        lambda: s.info(),
        lambda: s.ping(),
        lambda: s.upsert(make_points("a", 2, seed=16)[0]),
        lambda: s.delete([point_id("a", "doc-0")]),
    ]
    try:
        for call in calls:
            with pytest.raises(DependencyUnavailable) as err:
                await asyncio.wait_for(call(), timeout=10)
            assert err.value.dependency == "qdrant"
    finally:
        await s.aclose()


async def test_server_store_silent_server_times_out(silent_port: int) -> None:
    s = ServerStore.from_settings(QdrantSettings(url=f"http://127.0.0.1:{silent_port}", timeout_s=1))
    try:
        with pytest.raises(DependencyTimeout) as err:
            await asyncio.wait_for(s.search(unit(np.ones(DIM)), 5, 64, "a", {}), timeout=10)
        assert err.value.dependency == "qdrant"
    finally:
        await s.aclose()


async def test_server_store_maps_http_errors(stub: Any) -> None:
    """A server that answers, but not usefully: 404 (no collection), 503, 500, garbage."""
    from app.errors import DependencyBadResponse

    from .conftest import Reply

    s = ServerStore.from_settings(QdrantSettings(url=stub.url, collection="t_docs", timeout_s=2))
    path = ("POST", "/collections/t_docs/points/count")
    cases: list[tuple[Reply, type[DependencyError]]] = [
        (
            Reply(404, b'{"status": {"error": "Not found: Collection `t_docs` doesn\'t exist!"}}'),
            DependencyUnavailable,
        ),
        (Reply(503, b'{"status": {"error": "overloaded"}}'), DependencyUnavailable),
        (Reply(500, b'{"status": {"error": "boom"}}'), DependencyBadResponse),
        (Reply(200, b'{"result": {"count": "many"}, "status": "ok"}'), DependencyBadResponse),
        (Reply(200, b"not json at all"), DependencyBadResponse),
    ]
    try:
        for reply, expected in cases:
            stub.routes[path] = reply
            with pytest.raises(expected):
                await s.count("a")
        stub.routes[path] = Reply(200, b'{"result": {"count": 7}, "status": "ok", "time": 0.001}')
        assert await s.count("a") == 7
    finally:
        await s.aclose()
