"""Reindex over HTTP on the embedded engine: `POST /jobs/reindex` builds a new shard with new HNSW
parameters (or re-embedded), verifies it and switches to it without a restart; the answer cache
starts a new generation; a document written during the build is in the new shard; a rollback
switches back (and a second one forth again); bodies are validated strictly; admin keys only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from snapshots_support import ADMIN, READER, assert_json_error, collection, points, rag_ids, reindex
from support.app import make_settings, running_app

from app.errors import DependencyUnavailable

QUERY = "hut below the col"
NEW_DOC = {"id": "reindex-new", "text": "a bivouac shelter on the eastern ridge of the massif"}


@pytest.fixture
async def gateway_app(
    model_dir: Path, qdrant_path: Path, redis_url: str, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    settings = make_settings(
        model_dir,
        qdrant_path,
        redis_url,
        auth={"keys": [ADMIN.entry(), READER.entry()]},
        jobs={"dir": tmp_path / "jobs"},
        answer_cache={"enabled": True},
    )
    async with running_app(settings) as (c, app):
        yield c, app


@pytest.fixture
def gateway(gateway_app: tuple[httpx.AsyncClient, Any]) -> httpx.AsyncClient:
    return gateway_app[0]


async def test_hnsw_reindex_switches_and_rolls_back(gateway: httpx.AsyncClient, qdrant_path: Path) -> None:
    client = gateway
    before = await collection(client)
    assert before["config"]["hnsw_config"] == {"m": 32, "ef_construct": 200}
    ids = await rag_ids(client, QUERY)
    first = await client.post("/rag", json={"q": QUERY, "k": 20, "rerank": False}, headers=READER.headers)
    generation = before["gateway"]["generation"]

    job = await reindex(client, {"hnsw": {"m": 16, "ef_construct": 100}})
    assert job["state"] == "succeeded", job
    assert job["progress"] == 100.0
    assert job["params"] == {"hnsw": {"m": 16, "ef_construct": 100}}
    assert job["result"]["points"] == job["result"]["points_done"] == before["points_count"]
    after = await collection(client)
    assert after["config"]["hnsw_config"] == {"m": 16, "ef_construct": 100}
    assert after["points_count"] == before["points_count"]
    assert after["gateway"]["generation"] != generation
    # the pointer names the new shard; the replaced one is kept for a rollback, named beside it
    serving = (qdrant_path / "rag_docs.current").read_text().strip()
    assert serving == job["result"]["collection"]
    kept = (qdrant_path / "rag_docs.previous").read_text().strip()
    assert sorted(p.name for p in qdrant_path.iterdir() if p.is_dir()) == sorted([serving, kept])
    # the same passages answer, and not from the cache of before the switch
    again = await client.post("/rag", json={"q": QUERY, "k": 20, "rerank": False}, headers=READER.headers)
    assert again.headers["x-answer-cache"] == "miss"
    assert await rag_ids(client, QUERY) == ids
    assert first.json()["results"][0]["id"] == again.json()["results"][0]["id"]

    job = await reindex(client, {"rollback": True})
    assert job["state"] == "succeeded", job
    assert job["result"]["collection"] == kept
    assert (await collection(client))["config"]["hnsw_config"] == {"m": 32, "ef_construct": 200}
    # the shard left is kept in turn: rolling back again serves the reindexed one
    job = await reindex(client, {"rollback": True})
    assert job["state"] == "succeeded", job
    assert job["result"]["collection"] == serving
    assert (await collection(client))["config"]["hnsw_config"] == {"m": 16, "ef_construct": 100}
    assert await rag_ids(client, QUERY) == ids
    text = (await client.get("/metrics")).text
    assert 'rag_reindex_duration_seconds_count{op="reindex",outcome="ok"} 1.0' in text
    assert 'rag_reindex_duration_seconds_count{op="rollback",outcome="ok"} 2.0' in text
    assert "rag_reindex_last_failure_timestamp_seconds 0.0" in text


async def test_writes_during_the_build_land_in_the_new_collection(
    gateway_app: tuple[httpx.AsyncClient, Any],
) -> None:
    client, app = gateway_app
    n = await points(client)
    backend = app.state.rag.reindex.backend
    pages, building, release = backend.pages, asyncio.Event(), asyncio.Event()

    async def gated(store: Any, vectors: bool) -> AsyncIterator[list[Any]]:
        building.set()
        await release.wait()  # the build stays in progress until the write is sent
        async for page in pages(store, vectors):
            yield page

    backend.pages = gated
    r = await client.post("/jobs/reindex", json={"hnsw": {"m": 12}}, headers=ADMIN.headers)
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    await asyncio.wait_for(building.wait(), 60)
    write = asyncio.create_task(
        client.post("/documents", json={"tenant": "default", "documents": [NEW_DOC]}, headers=ADMIN.headers)
    )
    await asyncio.sleep(0.2)
    assert not write.done()  # held by the write fence while the build runs
    release.set()
    r = await asyncio.wait_for(write, 60)
    assert r.status_code == 200, r.text
    # the fence is released after the switch: the job is done, and the write is in the new shard
    got = await client.get(f"/jobs/{job_id}", headers=ADMIN.headers)
    assert got.json()["state"] == "succeeded", got.json()
    info = await collection(client)
    assert info["config"]["hnsw_config"]["m"] == 12
    assert info["points_count"] == n + 1


async def test_reembed_records_the_embedder(gateway: httpx.AsyncClient, qdrant_path: Path) -> None:
    client = gateway
    before = await collection(client)
    ids = await rag_ids(client, QUERY)
    job = await reindex(client, {"reembed": True})
    assert job["state"] == "succeeded", job
    assert job["result"]["reembedded"] is True
    assert job["result"]["embedder"] == before["gateway"]["embedder"]["id"]
    after = await collection(client)
    assert after["points_count"] == before["points_count"]
    assert after["config"]["hnsw_config"] == before["config"]["hnsw_config"]
    # the same model made the same vectors again: the same passages answer
    assert await rag_ids(client, QUERY) == ids


async def test_a_build_that_fails_verification_changes_nothing(
    gateway_app: tuple[httpx.AsyncClient, Any], qdrant_path: Path
) -> None:
    client, app = gateway_app
    before = await collection(client)
    shards = sorted(p.name for p in qdrant_path.iterdir() if p.is_dir())
    backend = app.state.rag.reindex.backend
    pages = backend.pages

    async def one_point_short(store: Any, vectors: bool) -> AsyncIterator[list[Any]]:
        first = True
        async for page in pages(store, vectors):
            yield page[1:] if first else page  # a copy that lost a point
            first = False

    backend.pages = one_point_short
    job = await reindex(client, {"hnsw": {"m": 16}})
    assert job["state"] == "failed", job
    n = before["points_count"]
    assert job["error"] == f"ReindexFailed: the new collection holds {n - 1} points, the serving one {n}"
    # still the shard of before, nothing new left beside it, no pointer moved
    after = await collection(client)
    assert after["config"]["hnsw_config"] == before["config"]["hnsw_config"]
    assert after["points_count"] == n
    assert sorted(p.name for p in qdrant_path.iterdir() if p.is_dir()) == shards
    assert not (qdrant_path / "rag_docs.current").exists()
    text = (await client.get("/metrics")).text
    assert 'rag_reindex_duration_seconds_count{op="reindex",outcome="error"} 1.0' in text
    assert "rag_reindex_last_failure_timestamp_seconds 0.0" not in text
    # writes were released: they go on into the serving shard
    r = await client.post(
        "/documents", json={"tenant": "default", "documents": [NEW_DOC]}, headers=ADMIN.headers
    )
    assert r.status_code == 200, r.text
    assert await points(client) == n + 1


async def test_rollback_with_nothing_kept_is_409(gateway: httpx.AsyncClient) -> None:
    r = await gateway.post("/jobs/reindex", json={"rollback": True}, headers=ADMIN.headers)
    assert_json_error(r, 409, "conflict")


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"hnsw": {"m": 2}}, "greater than or equal to 4"),
        ({"hnsw": {"m": 1000}}, "less than or equal to 128"),
        ({"hnsw": {"ef_construct": 4}}, "greater than or equal to 8"),
        ({"hnsw": {"m": "16"}}, "integer"),
        ({"hnsw": {"M": 16}}, "extra"),
        ({"hnsw": {"m": 16}, "ef": 3}, "extra"),
        ({"reembed": "yes"}, "boolean"),
        ({"rollback": True, "reembed": True}, "no other field"),
        ([], "object"),
    ],
)
async def test_bodies_are_validated(gateway: httpx.AsyncClient, body: Any, says: str) -> None:
    r = await gateway.post("/jobs/reindex", json=body, headers=ADMIN.headers)
    err = assert_json_error(r, 422, "invalid_request")
    assert says in str(err).lower() or says in r.text.lower(), r.text


async def test_only_admin_keys(gateway: httpx.AsyncClient) -> None:
    body = {"hnsw": {"m": 16}}
    assert_json_error(
        await gateway.post("/jobs/reindex", json=body, headers=READER.headers), 403, "forbidden"
    )
    assert_json_error(await gateway.post("/jobs/reindex", json=body), 401, "unauthorized")


async def test_on_a_qdrant_server_an_alias_switches(model_dir: Path, tmp_path: Path, redis_url: str) -> None:
    """qdrant-client's local mode stands in for the server: it keeps aliases like one."""
    settings = make_settings(
        model_dir,
        tmp_path / "qdrant",
        redis_url,
        qdrant={"url": ":memory:"},
        auth={"keys": [ADMIN.entry(), READER.entry()]},
        jobs={"dir": tmp_path / "jobs"},
    )
    async with running_app(settings) as (client, app):
        rag = app.state.rag
        store = rag.store.current
        docs = [{"id": f"d{i}", "text": f"passage {i} about the hut below the col"} for i in range(40)]
        r = await client.post(
            "/documents", json={"tenant": "default", "documents": docs}, headers=ADMIN.headers
        )
        assert r.status_code == 200, r.text
        # the serving name is a collection, not an alias: refused before anything is built
        job = await reindex(client, {"hnsw": {"m": 16}})
        assert job["state"] == "failed" and "not served through an alias" in job["error"], job
        assert list(await store.aliases()) == []
        await store.drop()
        v1 = store.sibling("rag_docs-v1")
        await v1.ensure_collection(rag.embedder.dim, rag.embedder.id)
        await store.set_aliases({"rag_docs": "rag_docs-v1"})
        r = await client.post(
            "/documents", json={"tenant": "default", "documents": docs}, headers=ADMIN.headers
        )
        assert r.status_code == 200, r.text
        ids = await rag_ids(client, QUERY)
        n = await points(client)

        job = await reindex(client, {"hnsw": {"m": 16, "ef_construct": 100}})
        assert job["state"] == "succeeded", job
        new = job["result"]["collection"]
        assert new.startswith("rag_docs-r")
        assert await store.aliases() == {"rag_docs": new, "rag_docs-previous": "rag_docs-v1"}
        info = await collection(client)
        assert info["config"]["hnsw_config"] == {"m": 16, "ef_construct": 100}
        assert info["points_count"] == n
        assert await rag_ids(client, QUERY) == ids

        job = await reindex(client, {"rollback": True})
        assert job["state"] == "succeeded", job
        assert await store.aliases() == {"rag_docs": "rag_docs-v1", "rag_docs-previous": new}
        job = await reindex(client, {"reembed": True})
        assert job["state"] == "succeeded", job
        # the collection it replaced is kept; the one kept before it is dropped
        newest = job["result"]["collection"]
        assert await store.aliases() == {"rag_docs": newest, "rag_docs-previous": "rag_docs-v1"}
        with pytest.raises(DependencyUnavailable):
            await store.sibling(new).ping()
        assert await points(client) == n
        assert await rag_ids(client, QUERY) == ids


async def test_a_restore_ends_the_rollback(gateway: httpx.AsyncClient, qdrant_path: Path) -> None:
    client = gateway
    r = await client.post("/admin/snapshots", headers=ADMIN.headers)
    assert r.status_code == 201, r.text
    snap = r.json()["name"]
    job = await reindex(client, {"hnsw": {"m": 16}})
    assert job["state"] == "succeeded", job
    assert (qdrant_path / "rag_docs.previous").exists()
    r = await client.post(f"/admin/snapshots/{snap}/restore", headers=ADMIN.headers)
    assert r.status_code == 200, r.text
    assert (await collection(client))["config"]["hnsw_config"]["m"] == 32
    assert not (qdrant_path / "rag_docs.previous").exists()
    r = await client.post("/jobs/reindex", json={"rollback": True}, headers=ADMIN.headers)
    assert_json_error(r, 409, "conflict")


async def test_keep_0_removes_the_replaced_shard(
    model_dir: Path, qdrant_path: Path, redis_url: str, tmp_path: Path
) -> None:
    settings = make_settings(
        model_dir,
        qdrant_path,
        redis_url,
        auth={"keys": [ADMIN.entry(), READER.entry()]},
        jobs={"dir": tmp_path / "jobs"},
        reindex={"keep": 0},
    )
    async with running_app(settings) as (client, _):
        job = await reindex(client, {"hnsw": {"ef_construct": 64}})
        assert job["state"] == "succeeded", job
        assert [p.name for p in qdrant_path.iterdir() if p.is_dir()] == [job["result"]["collection"]]
        assert not (qdrant_path / "rag_docs.previous").exists()
        r = await client.post("/jobs/reindex", json={"rollback": True}, headers=ADMIN.headers)
        assert_json_error(r, 409, "conflict")
