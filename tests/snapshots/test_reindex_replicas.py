"""Two replicas of one Qdrant server collection (two gateways sharing qdrant-client's local mode
and a real redis-server): a reindex that one runs holds the other's writes through the shared
write fence (app/clients/vectorstore/fence.py), and a write held that way lands in the new
collection, embedded by the model that collection was built with."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from qdrant_client import AsyncQdrantClient
from snapshots_support import ADMIN, assert_json_error, points, reindex
from support.app import running_app
from support.redis import RedisServer
from test_reindex_model_change import (
    PASSAGES,
    SAME,
    assert_each_found_by_its_text,
    ids,
    ingest,
    serving_embedder,
    settings_for,
    top,
)

from app.clients.vectorstore.server import ServerStore

LATE = {"id": "late", "text": "the ferry to the island leaves at dawn"}

Replica = tuple[httpx.AsyncClient, Any]


@asynccontextmanager
async def two_replicas(
    model_dir: Path, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Replica, Replica]]:
    """Replicas a and b on one server, serving PASSAGES (fp32) through the alias `rag_docs`; their
    followers never run on their own (follow_s=0): only a write makes b follow a switch."""
    server = AsyncQdrantClient(location=":memory:")
    monkeypatch.setattr(ServerStore, "from_settings", classmethod(lambda cls, s: cls(s, server, False)))

    def settings(name: str) -> Any:
        (tmp_path / name).mkdir()
        reindex = {"next_embedder": {"model_dir": model_dir, "variant": "int8"}, "follow_s": 0}
        groups = {"qdrant": {"url": ":memory:"}, "reindex": reindex}
        return settings_for(model_dir, tmp_path / name / "qdrant", redis_url, tmp_path / name, **groups)

    try:
        async with running_app(settings("a")) as a, running_app(settings("b")) as b:
            store = a[1].state.rag.store.current
            await store.sibling("rag_docs-v1").ensure_collection(384, ids(model_dir)[0])
            await store.set_aliases({"rag_docs": "rag_docs-v1"})
            await ingest(a[0])
            yield a, b
    finally:
        await server.close()


async def test_a_write_through_another_replica_during_a_reindex_lands_in_the_new_collection(
    model_dir: Path, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fp32, int8 = ids(model_dir)
    async with two_replicas(model_dir, redis_url, tmp_path, monkeypatch) as ((ca, a), (cb, _)):
        backend = a.state.rag.reindex.backend
        copied, go_on = asyncio.Event(), asyncio.Event()
        pages = backend.pages

        async def slow_pages(store: Any, vectors: bool) -> AsyncIterator[list[Any]]:
            async for page in pages(store, vectors):
                yield page
            copied.set()  # every point is copied; the build waits here, with the fence up
            await go_on.wait()

        backend.pages = slow_pages
        job = asyncio.create_task(reindex(ca, {"reembed": True}))
        await asyncio.wait_for(copied.wait(), 60)
        docs = {"tenant": "default", "documents": [LATE]}
        write = asyncio.create_task(cb.post("/documents", json=docs, headers=ADMIN.headers))
        await asyncio.sleep(0.5)
        assert not write.done()  # held by a's build, though b's own process fences nothing
        assert await serving_embedder(cb) == fp32
        go_on.set()
        done = await asyncio.wait_for(job, 120)
        assert done["state"] == "succeeded", done
        r = await asyncio.wait_for(write, 60)
        assert r.status_code == 200, r.text

        # b followed a's switch before it embedded: the new collection holds the late passage,
        # embedded by the model it was built with, and b serves with that model
        assert await serving_embedder(cb) == int8
        assert await points(cb) == len(PASSAGES) + 1
        first, _ = await top(cb, LATE["text"])
        assert first["text"] == LATE["text"], first
        assert first["vector_score"] > SAME, first
        await assert_each_found_by_its_text(cb)


async def test_with_redis_out_of_reach_a_write_answers_503_and_nothing_is_half_done(
    model_dir: Path,
    redis_url: str,
    redis_server: RedisServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without Redis no replica can tell whether another holds the fence: writes are refused
    (503, JSON) rather than risk landing beside a reindex; searches go on."""
    async with two_replicas(model_dir, redis_url, tmp_path, monkeypatch) as ((ca, _), (cb, _)):
        before = await points(cb)
        redis_server.kill()
        docs = {"tenant": "default", "documents": [LATE]}
        r = await cb.post("/documents", json=docs, headers=ADMIN.headers)
        assert_json_error(r, 503, "upstream_unavailable")
        assert r.headers["retry-after"]
        assert await points(cb) == before
        first, _ = await top(cb, PASSAGES[0])
        assert first["text"] == PASSAGES[0]
        redis_server.start()
        for _ in range(100):  # the Redis breaker lets a call through after its open time
            r = await cb.post("/documents", json=docs, headers=ADMIN.headers)
            if r.status_code == 200:
                break
            assert_json_error(r, 503, "upstream_unavailable")
            await asyncio.sleep(0.1)
        assert r.status_code == 200, r.text
        assert await points(ca) == before + 1
