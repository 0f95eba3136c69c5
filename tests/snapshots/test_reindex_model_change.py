"""A reindex that follows an embedding-model change: a gateway serving with the fp32 model and
configured with a next embedder (the int8 weights, RAG_REINDEX__NEXT_EMBEDDER__*) re-embeds every
passage with the next one, switches the collection and the serving embedder in one step, and
serves the new model's answers (never one cached before the switch); a rollback swaps both
back. Both backends: the embedded engine and a Qdrant server (qdrant-client's local mode)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from snapshots_support import (
    ADMIN,
    READER,
    Gateway,
    assert_json_error,
    collection,
    points,
    reindex,
    reindex_under_hey,
    start_gateway,
)
from support.app import make_settings, running_app
from support.poll import poll

from app.clients.embedder import OnnxEmbedder
from app.reindex.follow import Follower

PASSAGES = [
    "the refuge hut below the col opens in june",
    "a bivouac shelter on the eastern ridge of the massif",
    "glacier travel needs a rope team of three",
    "the north face was first climbed in winter",
    "espresso needs a fine and even grind",
    "a sourdough starter is fed twice a day",
    "the tram line along the harbour closes at midnight",
    "a red kite circles above the beech wood",
    "pressure cookers shorten the time beans need",
    "the lighthouse keeper logs every passing ship",
    "tide tables list the hours of high water",
    "a lime mortar lets old stone walls breathe",
]
# a passage's own text finds it at 0.99-1.0 with the model that embedded it (the int8 model's
# vectors vary a little with the batch a text is in), at 0.95-0.975 with the other variant
SAME = 0.98


def ids(model_dir: Path) -> tuple[str, str]:
    """The ids the fp32 and int8 weights record (the model's manifest names their revisions)."""
    manifest = json.loads((model_dir / "manifest.json").read_text())
    fp32 = f"{manifest['model']}@{manifest['revision']}"
    int8 = f"{manifest['model']}:int8@{manifest['variants']['int8']['revision']}"
    assert fp32 != int8
    return fp32, int8


def settings_for(model_dir: Path, data: Path, redis_url: str | None, tmp_path: Path, **groups: Any) -> Any:
    base: dict[str, dict[str, Any]] = {
        "auth": {"keys": [ADMIN.entry(), READER.entry()]},
        "jobs": {"dir": tmp_path / "jobs"},
        "answer_cache": {"enabled": True},
        "reindex": {"next_embedder": {"model_dir": model_dir, "variant": "int8"}},
    }
    return make_settings(model_dir, data, redis_url, **{**base, **groups})


async def ingest(client: httpx.AsyncClient) -> None:
    docs = [{"id": f"p{i}", "text": t} for i, t in enumerate(PASSAGES)]
    r = await client.post("/documents", json={"tenant": "default", "documents": docs}, headers=ADMIN.headers)
    assert r.status_code == 200, r.text


async def top(client: httpx.AsyncClient, q: str) -> tuple[dict[str, Any], str]:
    r = await client.post("/rag", json={"q": q, "k": 5, "rerank": False}, headers=READER.headers)
    assert r.status_code == 200, r.text
    return r.json()["results"][0], r.headers["x-answer-cache"]


async def assert_each_found_by_its_text(client: httpx.AsyncClient) -> None:
    """Every passage at rank 1 for its own text, at the score of the model that embedded it."""
    for text in PASSAGES:
        first, _ = await top(client, text)
        assert first["text"] == text, (text, first)
        assert first["vector_score"] > SAME, (text, first)


async def serving_embedder(client: httpx.AsyncClient) -> str:
    return str((await collection(client))["gateway"]["embedder"]["id"])


@pytest.fixture
async def fp32_gateway(
    model_dir: Path, redis_url: str, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """An fp32 gateway on a fresh collection of PASSAGES, with the int8 weights as the next embedder."""
    async with running_app(settings_for(model_dir, tmp_path / "qdrant", redis_url, tmp_path)) as (c, app):
        await ingest(c)
        yield c, app


async def test_reembed_moves_to_the_next_embedder_and_rollback_moves_back(
    fp32_gateway: tuple[httpx.AsyncClient, Any], model_dir: Path, tmp_path: Path
) -> None:
    client, app = fp32_gateway
    fp32, int8 = ids(model_dir)
    assert await serving_embedder(client) == fp32
    n = await points(client)
    cached_q = "when does the mountain hut open"
    before, _ = await top(client, cached_q)
    assert (await top(client, cached_q))[1] == "hit"  # cached before the switch

    job = await reindex(client, {"reembed": True})
    assert job["state"] == "succeeded", job
    result = job["result"]
    assert (result["embedder"], result["previous_embedder"]) == (int8, fp32)
    assert result["promote"] == {"RAG_EMBEDDER__MODEL_DIR": str(model_dir), "RAG_EMBEDDER__VARIANT": "int8"}
    assert (result["points"], result["points_done"]) == (n, n)
    # the collection and the serving embedder switched together
    assert await serving_embedder(client) == int8
    assert app.state.rag.pipeline.embedder.id == int8
    # queries are embedded by the int8 weights now: the very vectors they give
    probe = "which hut opens in june"
    int8_model = OnnxEmbedder(model_dir, variant="int8")
    try:
        assert np.array_equal(await app.state.rag.embedder.embed(probe), int8_model.encode([probe])[0])
    finally:
        await int8_model.aclose()
    assert await points(client) == n
    after, cache = await top(client, cached_q)
    assert cache == "miss"  # the answer cached before the switch is not served
    # another model's vectors answer (fp32 and int8 vectors of one text differ: cosine ~0.97)
    assert after["vector_score"] != pytest.approx(before["vector_score"], abs=1e-4)
    await assert_each_found_by_its_text(client)
    # a document written after the switch is embedded by the serving (int8) model
    extra = {"id": "late", "text": "a late frost damaged the vineyard terraces"}
    r = await client.post(
        "/documents", json={"tenant": "default", "documents": [extra]}, headers=ADMIN.headers
    )
    assert r.status_code == 200, r.text
    first, _ = await top(client, extra["text"])
    assert first["text"] == extra["text"] and first["vector_score"] > SAME

    job = await reindex(client, {"rollback": True})
    assert job["state"] == "succeeded", job
    assert (job["result"]["embedder"], job["result"]["previous_embedder"]) == (fp32, int8)
    assert job["result"]["promote"] == {}  # the configured embedder serves again
    assert await serving_embedder(client) == fp32
    assert await points(client) == n  # the kept collection: the late document is not in it
    back, cache = await top(client, cached_q)
    assert cache == "miss"
    assert back["vector_score"] == pytest.approx(before["vector_score"], abs=1e-5)
    await assert_each_found_by_its_text(client)


async def test_requests_across_the_switch_all_answer_and_none_is_stale(
    fp32_gateway: tuple[httpx.AsyncClient, Any],
) -> None:
    """Clients keep asking (answers cached and served again) while the reembed job runs and
    switches: every request answers 200, and every answer asked for after the switch is the new
    model's, never one cached before it."""
    client, _ = fp32_gateway
    queries = ["when does the mountain hut open", "roped glacier travel", "feeding a starter"]
    before = {q: (await top(client, q))[0]["vector_score"] for q in queries}
    switched = asyncio.Event()
    seen: list[tuple[bool, str, int, float | None, str]] = []  # (asked after the switch, ...)

    async def ask(q: str) -> None:
        after = switched.is_set()
        r = await client.post("/rag", json={"q": q, "k": 5, "rerank": False}, headers=READER.headers)
        score = r.json()["results"][0]["vector_score"] if r.status_code == 200 else None
        seen.append((after, q, r.status_code, score, r.headers.get("x-answer-cache", "")))

    async def keep_asking() -> None:
        rounds_after = 0
        while rounds_after < 5:
            for q in queries:
                await ask(q)
            rounds_after += switched.is_set()

    askers = [asyncio.create_task(keep_asking()) for _ in range(3)]
    job = await reindex(client, {"reembed": True})
    switched.set()
    await asyncio.gather(*askers)
    assert job["state"] == "succeeded", job
    assert {status for _, _, status, _, _ in seen} == {200}, seen
    late = [(q, score, cache) for after, q, _, score, cache in seen if after]
    assert {cache for _, _, cache in late} >= {"hit"}  # answers cached after the switch are served
    for q, score, cache in late:  # the new model's answer, never the one of before
        assert score != pytest.approx(before[q], abs=1e-4), (q, score, cache)


async def test_a_failed_model_change_keeps_the_serving_embedder(
    fp32_gateway: tuple[httpx.AsyncClient, Any], model_dir: Path
) -> None:
    client, app = fp32_gateway
    fp32, _ = ids(model_dir)
    backend = app.state.rag.reindex.backend
    pages = backend.pages

    async def one_point_short(store: Any, vectors: bool) -> AsyncIterator[list[Any]]:
        async for page in pages(store, vectors):
            yield page[1:]

    backend.pages = one_point_short
    job = await reindex(client, {"reembed": True})
    assert job["state"] == "failed" and "ReindexFailed" in job["error"], job
    assert await serving_embedder(client) == fp32
    await assert_each_found_by_its_text(client)
    r = await client.post("/jobs/reindex", json={"rollback": True}, headers=ADMIN.headers)
    assert_json_error(r, 409, "conflict")  # nothing was switched: nothing is kept


async def test_rollback_is_refused_when_no_configured_embedder_made_the_previous_collection(
    model_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    fp32, int8 = ids(model_dir)
    qdrant = tmp_path / "qdrant"
    async with running_app(settings_for(model_dir, qdrant, redis_url, tmp_path)) as (client, _):
        await ingest(client)
        assert (await reindex(client, {"reembed": True}))["state"] == "succeeded"
    # the int8 settings promoted, no next embedder: the kept (fp32) collection has no embedder here
    promoted = settings_for(
        model_dir, qdrant, redis_url, tmp_path, embedder={"variant": "int8"}, reindex={"next_embedder": None}
    )
    async with running_app(promoted) as (client, _):
        assert await serving_embedder(client) == int8
        r = await client.post("/jobs/reindex", json={"rollback": True}, headers=ADMIN.headers)
        err = assert_json_error(r, 409, "conflict")
        assert f"embedded by {fp32}" in err["message"] and int8 in err["message"], err
        await assert_each_found_by_its_text(client)  # still serving, unchanged
    # with the old model configured as the next one, the rollback is made
    both = settings_for(
        model_dir,
        qdrant,
        redis_url,
        tmp_path,
        embedder={"variant": "int8"},
        reindex={"next_embedder": {"model_dir": model_dir, "variant": "fp32"}},
    )
    async with running_app(both) as (client, _):
        job = await reindex(client, {"rollback": True})
        assert job["state"] == "succeeded", job
        assert await serving_embedder(client) == fp32
        assert job["result"]["promote"] == {"RAG_EMBEDDER__MODEL_DIR": str(model_dir)}
        await assert_each_found_by_its_text(client)


async def test_start_up_refuses_a_collection_no_configured_embedder_made(
    model_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    fp32, int8 = ids(model_dir)
    qdrant = tmp_path / "qdrant"
    async with running_app(settings_for(model_dir, qdrant, redis_url, tmp_path)) as (client, _):
        await ingest(client)  # recorded as made by fp32
    # int8 configured, a remote model as the next one (never contacted: its id is configured)
    remote = {"kind": "http", "url": "http://127.0.0.1:9", "id": "remote-minilm@1"}
    neither = settings_for(
        model_dir,
        qdrant,
        redis_url,
        tmp_path,
        embedder={"variant": "int8"},
        reindex={"next_embedder": remote},
    )
    with pytest.raises(RuntimeError) as raised:
        async with running_app(neither):
            pass
    message = str(raised.value)
    assert f"embedded by {fp32}" in message and int8 in message and "remote-minilm@1" in message, message


async def test_reembed_without_a_next_embedder_keeps_the_model(
    model_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    fp32, _ = ids(model_dir)
    settings = settings_for(model_dir, tmp_path / "qdrant", redis_url, tmp_path, reindex={})
    async with running_app(settings) as (client, _):
        await ingest(client)
        job = await reindex(client, {"reembed": True})
        assert job["state"] == "succeeded", job
        assert job["result"]["embedder"] == fp32
        assert "previous_embedder" not in job["result"] and "promote" not in job["result"]
        assert await serving_embedder(client) == fp32
        await assert_each_found_by_its_text(client)


async def test_on_a_qdrant_server_the_alias_and_the_embedder_switch_together(
    model_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    fp32, int8 = ids(model_dir)
    settings = settings_for(model_dir, tmp_path / "qdrant", redis_url, tmp_path, qdrant={"url": ":memory:"})
    async with running_app(settings) as (client, app):
        store = app.state.rag.store.current
        v1 = store.sibling("rag_docs-v1")
        await v1.ensure_collection(384, fp32)
        await store.set_aliases({"rag_docs": "rag_docs-v1"})
        await ingest(client)
        n = await points(client)
        assert (await top(client, PASSAGES[0]))[1] == "miss"
        assert (await top(client, PASSAGES[0]))[1] == "hit"

        job = await reindex(client, {"reembed": True})
        assert job["state"] == "succeeded", job
        new = job["result"]["collection"]
        assert await store.aliases() == {"rag_docs": new, "rag_docs-previous": "rag_docs-v1"}
        assert await store.sibling(new).recorded_embedder() == int8
        assert await serving_embedder(client) == int8
        assert await points(client) == n
        assert (await top(client, PASSAGES[0]))[1] == "miss"
        await assert_each_found_by_its_text(client)

        job = await reindex(client, {"rollback": True})
        assert job["state"] == "succeeded", job
        assert await store.aliases() == {"rag_docs": "rag_docs-v1", "rag_docs-previous": new}
        assert await serving_embedder(client) == fp32
        await assert_each_found_by_its_text(client)


def test_a_restart_after_the_switch_serves_with_the_next_embedder(
    model_dir: Path, qdrant_path: Path, tmp_path: Path
) -> None:
    """Real processes: the settings not promoted yet, a restart serves the switched collection
    with the next embedder (and says to promote it); promoted, it serves without the next one; a
    gateway with neither embedder refuses to start."""
    fp32, int8 = ids(model_dir)
    env = {
        "RAG_EMBEDDER__MODEL_DIR": str(model_dir),
        "RAG_QDRANT__PATH": str(qdrant_path),  # the synthetic corpus, embedded by fp32
        "RAG_JOBS__DIR": str(tmp_path / "jobs"),
        "RAG_REDIS__URL": "",
        "RAG_REINDEX__NEXT_EMBEDDER__MODEL_DIR": str(model_dir),
        "RAG_REINDEX__NEXT_EMBEDDER__VARIANT": "int8",
    }
    log = tmp_path / "gateway.log"
    gw = start_gateway(env, log)
    try:
        docs = [{"id": f"p{i}", "text": t} for i, t in enumerate(PASSAGES)]
        r = httpx.post(
            f"{gw.url}/documents",
            json={"tenant": "default", "documents": docs},
            headers=ADMIN.headers,
            timeout=60,
        )
        assert r.status_code == 200, r.text
        r = httpx.post(f"{gw.url}/jobs/reindex", json={"reembed": True}, headers=ADMIN.headers, timeout=30)
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]

        def done() -> dict[str, Any] | None:
            job = httpx.get(f"{gw.url}/jobs/{job_id}", headers=ADMIN.headers, timeout=30).json()
            return job if job["state"] not in ("queued", "running") else None

        job = poll(done, 120, what="reembed finished")
        assert job["state"] == "succeeded", job
        assert job["result"]["embedder"] == int8
    finally:
        gw.stop()
    assert "serving with the next embedder" not in log.read_text()

    gw = start_gateway(env, log)  # the settings not promoted
    try:
        assert process_embedder(gw) == int8
        assert "serving with the next embedder" in log.read_text()
        assert_found_by_text(gw)
    finally:
        gw.stop()

    promoted = {k: v for k, v in env.items() if not k.startswith("RAG_REINDEX__NEXT_EMBEDDER__")}
    gw = start_gateway({**promoted, "RAG_EMBEDDER__VARIANT": "int8"}, log)
    try:
        assert process_embedder(gw) == int8
        assert_found_by_text(gw)
    finally:
        gw.stop()

    with pytest.raises(RuntimeError, match="gateway exited") as raised:
        start_gateway(promoted, log).stop()  # fp32, no next embedder: made by neither
    assert f"embedded by {int8}" in str(raised.value) and fp32 in str(raised.value)


def process_embedder(gw: Gateway) -> str:
    r = httpx.get(f"{gw.url}/admin/collection", headers=ADMIN.headers, timeout=30)
    assert r.status_code == 200, r.text
    return str(r.json()["result"]["gateway"]["embedder"]["id"])


def assert_found_by_text(gw: Gateway) -> None:
    for text in PASSAGES:
        r = httpx.post(
            f"{gw.url}/rag", json={"q": text, "k": 3, "rerank": False}, headers=READER.headers, timeout=30
        )
        assert r.status_code == 200, r.text
        first = r.json()["results"][0]
        assert first["text"] == text and first["vector_score"] > SAME, (text, first)


def test_model_switches_under_hey_load_answer_every_request(model_dir: Path, tmp_path: Path) -> None:
    """A real process under `hey`: the model switched (reembed) and switched back (rollback) again
    and again while the load runs, and every /rag request answers 200."""
    qdrant = tmp_path / "qdrant"

    async def build() -> None:  # a new collection of PASSAGES, embedded by fp32
        async with running_app(settings_for(model_dir, qdrant, None, tmp_path)) as (client, _app):
            await ingest(client)

    asyncio.run(build())
    env = {
        "RAG_EMBEDDER__MODEL_DIR": str(model_dir),
        "RAG_QDRANT__PATH": str(qdrant),
        "RAG_JOBS__DIR": str(tmp_path / "jobs"),
        "RAG_REDIS__URL": "",
        "RAG_ANSWER_CACHE__ENABLED": "true",
        "RAG_REINDEX__NEXT_EMBEDDER__MODEL_DIR": str(model_dir),
        "RAG_REINDEX__NEXT_EMBEDDER__VARIANT": "int8",
        # two shared cores also run the re-embedding: the deadline is not what is tested
        "RAG_SERVER__DEADLINE_S": "20",
    }
    gw = start_gateway(env, tmp_path / "gateway.log")
    try:
        switches, codes = reindex_under_hey(
            gw, [{"reembed": True}, {"rollback": True}], "hut below the col", 5
        )
        assert switches >= 2, switches
        assert list(codes) == ["200"], (switches, codes)
    finally:
        gw.stop()


@asynccontextmanager
async def on_a_server(
    model_dir: Path, redis_url: str, tmp_path: Path, follow_s: float
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """A gateway on a Qdrant server (qdrant-client's local mode) serving PASSAGES through the
    alias `rag_docs` -> `rag_docs-v1`, embedded by fp32, with int8 as the next embedder."""
    settings = settings_for(
        model_dir,
        tmp_path / "qdrant",
        redis_url,
        tmp_path,
        qdrant={"url": ":memory:"},
        reindex={"next_embedder": {"model_dir": model_dir, "variant": "int8"}, "follow_s": follow_s},
    )
    async with running_app(settings) as (client, app):
        store = app.state.rag.store.current
        await store.sibling("rag_docs-v1").ensure_collection(384, ids(model_dir)[0])
        await store.set_aliases({"rag_docs": "rag_docs-v1"})
        await ingest(client)
        yield client, app


async def test_a_replica_follows_a_model_switch_another_replica_made(
    model_dir: Path, redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Replicas share one Qdrant server; the switch was made by another replica. This gateway is
    put in that replica's place: after a reembed its embedder is set back to fp32 (as on a
    replica that did not run the job), so it searches the int8 collection with fp32 vectors until
    its follower reads the alias: then it swaps to int8, and back again after a switch back. A
    collection made by neither configured embedder makes it refuse (503), never answer wrongly."""
    fp32, int8 = ids(model_dir)
    async with on_a_server(model_dir, redis_url, tmp_path, follow_s=0) as (client, app):
        rag = app.state.rag
        store = rag.store.current
        follower = Follower(rag.reindex, rag.reindex.backend, 1.0)
        assert not await follower.check()  # the collection its embedder made: nothing to do

        job = await reindex(client, {"reembed": True})
        assert job["state"] == "succeeded", job
        rag.embedder.swap(OnnxEmbedder(model_dir))  # the replica that did not run the job
        assert await serving_embedder(client) == fp32
        load = rag.reindex.choice.load

        def fails(_: Any) -> Any:  # the model's volume not mounted yet
            raise OSError("model directory not mounted")

        rag.reindex.choice.load = fails
        assert not await follower.check()  # refuses meanwhile: never the old model on the new data
        assert (await client.get("/readyz")).status_code == 503
        assert rag.jobs.paused()  # its jobs are left to replicas that can embed
        rag.reindex.choice.load = load
        assert await follower.check()  # tried again: the failure was not taken as seen
        assert not rag.jobs.paused()
        assert await serving_embedder(client) == int8
        await assert_each_found_by_its_text(client)
        assert not await follower.check()  # the alias did not move again

        # another replica rolls back: the alias points at the fp32 collection again
        await store.set_aliases({"rag_docs": "rag_docs-v1", "rag_docs-previous": job["result"]["collection"]})
        assert await follower.check()
        assert await serving_embedder(client) == fp32
        await assert_each_found_by_its_text(client)

        # a collection that neither configured embedder made: refused, not searched wrongly
        await store.sibling("rag_docs-other").ensure_collection(384, "another-model@1")
        await store.set_aliases({"rag_docs": "rag_docs-other"})
        assert not await follower.check()
        r = await client.post("/rag", json={"q": PASSAGES[0], "k": 5}, headers=READER.headers)
        assert_json_error(r, 503, "upstream_unavailable")  # the reason is the operator's (log)
        assert rag.jobs.paused()
        refused = [rec for rec in caplog.records if rec.getMessage() == "refusing to embed"]
        assert refused and "another-model@1" in refused[-1].__dict__["error"]
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and "embedder" in ready.json()["failing"], ready.text
        await store.set_aliases({"rag_docs": "rag_docs-v1"})
        assert not await follower.check()  # its own model's collection again: serves
        await assert_each_found_by_its_text(client)
        assert (await client.get("/readyz")).status_code == 200


async def test_a_switch_back_to_a_collection_the_follower_looked_at_before_is_followed(
    model_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    """This replica looked at the fp32 collection, then switched to int8 itself; another replica
    rolls back to the fp32 collection: the follower swaps back, though the alias now names a
    collection it has seen before."""
    fp32, int8 = ids(model_dir)
    async with on_a_server(model_dir, redis_url, tmp_path, follow_s=0) as (client, app):
        rag = app.state.rag
        follower = Follower(rag.reindex, rag.reindex.backend, 1.0)
        assert not await follower.check()  # looked at rag_docs-v1, made by fp32
        job = await reindex(client, {"reembed": True})  # this replica's own switch
        assert job["state"] == "succeeded", job
        assert await serving_embedder(client) == int8
        await rag.store.current.set_aliases({"rag_docs": "rag_docs-v1"})  # another replica's rollback
        assert await follower.check()
        assert await serving_embedder(client) == fp32
        await assert_each_found_by_its_text(client)


async def test_the_follower_runs_in_the_background(model_dir: Path, redis_url: str, tmp_path: Path) -> None:
    fp32, int8 = ids(model_dir)
    async with on_a_server(model_dir, redis_url, tmp_path, follow_s=0.1) as (client, app):
        rag = app.state.rag
        store = rag.store.current
        job = await reindex(client, {"reembed": True})
        assert job["state"] == "succeeded", job
        rag.embedder.swap(OnnxEmbedder(model_dir))  # as on a replica that did not run the job
        # the alias target is one the follower has seen already: it moves, as another replica's
        # switch would move it, and the follower swaps within a few intervals
        await store.set_aliases({"rag_docs": "rag_docs-v1"})
        await poll_async(lambda: serving_embedder(client), fp32)
        await store.set_aliases({"rag_docs": job["result"]["collection"]})
        await poll_async(lambda: serving_embedder(client), int8)
        await assert_each_found_by_its_text(client)


async def poll_async(get: Any, want: str, timeout_s: float = 30.0) -> None:
    end = asyncio.get_running_loop().time() + timeout_s
    while (got := await get()) != want:
        assert asyncio.get_running_loop().time() < end, (got, want)
        await asyncio.sleep(0.05)
