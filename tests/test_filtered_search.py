"""Filtered /rag on a freshly bootstrapped collection returns every passage that matches: every
(source, topic) pair of the corpus, and lists of document ids. And a collection made by an older
version (index on `tenant` only, full_scan_threshold 10 KB) gets its payload indexes at start-up
and answers in full from then on."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from support.app import make_settings, running_app

from app.clients.vectorstore import EdgeStore
from app.settings import QdrantSettings
from app.types import PointIn, point_id


def matching(corpus: list[dict[str, Any]], **want: str) -> set[str]:
    return {p["id"] for p in corpus if all(p[k] == v for k, v in want.items())}


async def rag(client: httpx.AsyncClient, **body: Any) -> list[dict[str, Any]]:
    r = await client.post("/rag", json={"q": "x", "rerank": False, **body})
    assert r.status_code == 200, r.text
    results: list[dict[str, Any]] = r.json()["results"]
    return results


async def test_every_source_topic_pair_returns_every_match(
    client: httpx.AsyncClient, corpus: list[dict[str, Any]]
) -> None:
    sources = sorted({p["source"] for p in corpus})
    topics = sorted({p["topic"] for p in corpus})
    for source in sources:
        for topic in topics:
            want = matching(corpus, source=source, topic=topic)
            got = await rag(client, k=200, filter={"source": source, "topic": topic})
            assert len(want) <= 200  # so that k=200 must return all of them
            assert sorted(p["payload"]["doc_id"] for p in got) == sorted(want), (source, topic)


async def test_lists_of_ids_return_every_id(client: httpx.AsyncClient, corpus: list[dict[str, Any]]) -> None:
    rng = random.Random(3)
    ids = [p["id"] for p in corpus]
    for _ in range(20):
        chosen = rng.sample(ids, 5)
        got = await rag(client, k=10, filter={"doc_id": chosen})
        assert sorted(p["payload"]["doc_id"] for p in got) == sorted(chosen)


async def test_filter_values_must_match_the_key_type(client: httpx.AsyncClient) -> None:
    r = await client.post("/rag", json={"q": "x", "filter": {"topic": 5}})
    assert r.status_code == 422
    assert "keyword" in r.json()["error"]["message"]


def _old_collection(path: Path, n: int, dim: int) -> list[PointIn]:
    """A collection as the previous version made it: tenant index only, threshold 10 KB."""
    from qdrant_edge import (
        Distance,
        EdgeConfig,
        EdgeOptimizersConfig,
        EdgeShard,
        EdgeVectorParams,
        HnswIndexConfig,
        KeywordIndexParams,
        Point,
        UpdateOperation,
    )

    config = EdgeConfig(
        vectors=EdgeVectorParams(size=dim, distance=Distance.Cosine),
        hnsw_config=HnswIndexConfig(m=32, ef_construct=200, full_scan_threshold=10),
        optimizers=EdgeOptimizersConfig(indexing_threshold=1),
    )
    path.mkdir(parents=True)
    shard = EdgeShard.create(str(path), config)
    shard.update(UpdateOperation.create_field_index("tenant", KeywordIndexParams(is_tenant=True)))
    rng = np.random.default_rng(5)
    centers = rng.normal(size=(6, dim))
    points = []
    for i in range(n):
        v = centers[i % 6] + 0.3 * rng.normal(size=dim)
        v = (v / np.linalg.norm(v)).astype(np.float32)
        payload = {"tenant": "default", "doc_id": f"d{i}", "topic": f"t{i % 11}", "source": f"s{i % 7}"}
        points.append(PointIn(point_id("default", f"d{i}"), v, payload))
    shard.update(UpdateOperation.upsert_points([Point(p.id, p.vector.tolist(), p.payload) for p in points]))
    shard.optimize()
    shard.flush()
    shard.close()
    return points


async def test_an_older_collection_gets_its_indexes_at_start_up(tmp_path: Path) -> None:
    settings = QdrantSettings(path=tmp_path, collection="old")
    points = _old_collection(tmp_path / "old", 1500, 384)
    store = EdgeStore(settings)
    try:
        assert await store.ensure_indexes() == ["source", "doc_id", "topic", "lang"]
        schema = (await store.info())["payload_schema"]
        assert {k: v["points"] for k, v in schema.items()} == {
            "tenant": 1500,
            "source": 1500,
            "doc_id": 1500,
            "topic": 1500,
            "lang": 0,
        }
        assert await store.ensure_indexes() == []  # once
        for i in range(25):
            want = {
                p.id
                for p in points
                if p.payload["topic"] == f"t{i % 11}" and p.payload["source"] == f"s{i % 7}"
            }
            q = points[i].vector
            hits = await store.search(
                q, 200, 64, "default", {"topic": [f"t{i % 11}"], "source": [f"s{i % 7}"]}
            )
            assert {h.id for h in hits} == want
    finally:
        await store.aclose()


async def test_start_up_logs_the_indexes_it_adds(
    tmp_path: Path, model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _old_collection(tmp_path / "qdrant" / "rag_docs", 20, 384)
    with caplog.at_level(logging.WARNING, logger="rag.lifespan"):
        async with running_app(make_settings(model_dir, tmp_path / "qdrant", None)):
            pass
    added = [r for r in caplog.records if r.getMessage() == "payload indexes added to an existing collection"]
    assert len(added) == 1 and added[0].keys == ["source", "doc_id", "topic", "lang"]  # type: ignore[attr-defined]


async def test_the_served_schema_types_each_filter_key(settings_factory: Any) -> None:
    keys = {"topic": "keyword", "year": "integer", "draft": "bool"}
    async with running_app(settings_factory(qdrant={"filter_keys": keys})) as (client, _):
        schema = (await client.get("/openapi.json")).json()
        r = await client.post("/rag", json={"q": "x", "filter": {"year": "2020"}})
        assert r.status_code == 422 and "integer" in r.json()["error"]["message"]
        r = await client.post("/rag", json={"q": "x", "filter": {"year": [2020, 2021], "draft": False}})
        assert r.status_code == 200, r.text
    variant = next(
        v
        for v in schema["components"]["schemas"]["RagRequest"]["properties"]["filter"]["anyOf"]
        if v.get("type") == "object"
    )
    assert variant["additionalProperties"] is False
    assert variant["propertyNames"] == {"enum": ["draft", "topic", "year"]}

    def types(key: str) -> set[tuple[str, str | None]]:
        return {(v["type"], v.get("items", {}).get("type")) for v in variant["properties"][key]["anyOf"]}

    assert types("topic") == {("string", None), ("array", "string")}
    assert types("year") == {("integer", None), ("array", "integer")}
    assert types("draft") == {("boolean", None)}
