"""Ingestion jobs and chunked documents over HTTP: admin only, JSON Lines streamed to disk (415 for
another type, 413 past the limit with nothing left behind), 202 + Location, polled to success with
bad lines reported by number, found by /rag; a long document through POST /documents is chunked,
and DELETE removes every chunk."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.keys import make_key
from support.prom import metric
from tenancy_support import assert_json_error, auth_settings, serve

ADMIN = make_key("admin-jobs", "ops", admin=True)
READER = make_key("reader-jobs", "t1")
LIMIT = 256 * 1024
NDJSON = {"Content-Type": "application/x-ndjson"}
LONG = " ".join(
    f"Stage {i} of the tour climbs the pass number {i} before the long descent." for i in range(120)
)


@pytest.fixture(scope="module")
async def gateway(
    model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[httpx.AsyncClient, Path]]:
    base = tmp_path_factory.mktemp("jobs")
    settings = auth_settings(
        model_dir, base / "qdrant", None, [ADMIN, READER], jobs={"max_body_bytes": LIMIT, "batch_docs": 8}
    )
    async with serve(settings) as (c, _):
        yield c, base / "jobs"


async def finished(client: httpx.AsyncClient, location: str) -> dict[str, Any]:
    for _ in range(3000):
        r = await client.get(location, headers=ADMIN.headers)
        assert r.status_code == 200, r.text
        if r.json()["state"] in ("succeeded", "failed", "cancelled"):
            return dict(r.json())
        await asyncio.sleep(0.02)
    raise AssertionError("the job did not finish")


async def rag(client: httpx.AsyncClient, q: str, **kw: Any) -> list[dict[str, Any]]:
    r = await client.post("/rag", json={"q": q, "rerank": False, "k": 200, **kw}, headers=READER.headers)
    assert r.status_code == 200, r.text
    return list(r.json()["results"])


async def test_only_admin_keys_and_only_json_lines(gateway: tuple[httpx.AsyncClient, Path]) -> None:
    client, _ = gateway
    assert_json_error(
        await client.post("/jobs/ingest?tenant=t1", content=b"{}\n", headers=NDJSON), 401, "unauthorized"
    )
    r = await client.post("/jobs/ingest?tenant=t1", content=b"{}\n", headers={**NDJSON, **READER.headers})
    assert_json_error(r, 403, "forbidden")
    assert_json_error(await client.get("/jobs", headers=READER.headers), 403, "forbidden")
    r = await client.post(
        "/jobs/ingest?tenant=t1", content=b"{}\n", headers={"Content-Type": "text/plain", **ADMIN.headers}
    )
    assert_json_error(r, 415, "unsupported_media_type")
    r = await client.post(
        "/jobs/ingest?tenant=bad tenant", content=b"{}\n", headers={**NDJSON, **ADMIN.headers}
    )
    assert_json_error(r, 422, "invalid_request")
    assert_json_error(await client.get("/jobs/" + "0" * 32, headers=ADMIN.headers), 404, "not_found")
    assert_json_error(await client.get("/jobs/../../etc", headers=ADMIN.headers), 404, "not_found")
    assert_json_error(await client.get("/jobs/not-an-id", headers=ADMIN.headers), 422, "invalid_request")


async def test_over_the_limit_is_413_and_leaves_nothing_behind(
    gateway: tuple[httpx.AsyncClient, Path],
) -> None:
    client, jobs_dir = gateway
    before = sorted(p.name for p in jobs_dir.iterdir())
    big = b'{"id": "x", "text": "' + b"a" * LIMIT + b'"}\n'
    r = await client.post("/jobs/ingest?tenant=t1", content=big, headers={**NDJSON, **ADMIN.headers})
    assert_json_error(r, 413, "payload_too_large")

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(8):
            yield b"b" * (LIMIT // 4)

    r = await client.post("/jobs/ingest?tenant=t1", content=chunked(), headers={**NDJSON, **ADMIN.headers})
    assert_json_error(r, 413, "payload_too_large")
    assert sorted(p.name for p in jobs_dir.iterdir()) == before


async def test_a_job_runs_to_success_reports_bad_lines_and_its_passages_are_found(
    gateway: tuple[httpx.AsyncClient, Path],
) -> None:
    client, jobs_dir = gateway
    ingested = await metric(client, "rag_ingest_documents_total")
    succeeded = await metric(client, "rag_ingest_jobs", state="succeeded")
    lines = [
        json.dumps(
            {"id": f"j{i}", "text": f"Job passage {i} about a cyclist named Rider{i}.", "topic": "tour"}
        )
        for i in range(20)
    ]
    lines[5] = "{broken"
    lines[9] = json.dumps({"id": "no text"})
    lines.append(json.dumps({"id": "long", "text": LONG}))
    body = ("\n".join(lines) + "\n").encode()
    r = await client.post("/jobs/ingest?tenant=t1", content=body, headers={**NDJSON, **ADMIN.headers})
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    assert r.json()["state"] == "queued"
    assert r.headers["location"] == f"/jobs/{job_id}"

    out = await finished(client, r.headers["location"])
    assert out["state"] == "succeeded", out
    assert (out["lines"], out["documents"], out["failed_count"]) == (21, 19, 2)
    assert [f["line"] for f in out["failed"]] == [6, 10]
    assert out["failed"][0]["error"] == "line is not valid JSON"
    assert out["failed"][1]["error"].startswith("id:")  # the id does not match its pattern
    assert out["chunks"] > 19 and out["upserted"] == out["chunks"]  # the long one is several points
    assert out["progress"] == 100.0 and out["bytes"] == out["bytes_done"] == len(body)
    assert not (jobs_dir / job_id / "input.ndjson").exists()  # the record stays, the upload goes
    # progress in metrics too: the good documents counted, the job among the succeeded
    assert await metric(client, "rag_ingest_documents_total") == ingested + 19
    assert await metric(client, "rag_ingest_jobs", state="succeeded") == succeeded + 1
    assert await metric(client, "rag_ingest_jobs", state="running") == 0
    listed = (await client.get("/jobs", headers=ADMIN.headers)).json()["jobs"]
    assert job_id in [j["job_id"] for j in listed]

    hits = await rag(client, "Job passage 7 about a cyclist named Rider7.", filter={"doc_id": "j7"})
    assert [h["payload"]["doc_id"] for h in hits] == ["j7"]
    long_hits = await rag(client, "the long descent", filter={"doc_id": "long"})
    assert len(long_hits) == out["chunks"] - 18 > 1
    assert sorted(h["payload"]["chunk"] for h in long_hits) == list(range(len(long_hits)))

    # the same upload again: every document is unchanged, nothing is embedded again
    r = await client.post("/jobs/ingest?tenant=t1", content=body, headers={**NDJSON, **ADMIN.headers})
    again = await finished(client, r.headers["location"])
    assert (again["state"], again["skipped_unchanged"], again["upserted"]) == ("succeeded", 19, 0)
    # cancelling a finished job changes nothing
    r = await client.delete(f"/jobs/{job_id}", headers=ADMIN.headers)
    assert r.status_code == 200 and r.json()["state"] == "succeeded"


async def test_a_long_document_is_chunked_and_deleted_whole(gateway: tuple[httpx.AsyncClient, Path]) -> None:
    client, _ = gateway
    r = await client.post(
        "/documents",
        json={"tenant": "t1", "documents": [{"id": "big", "text": LONG * 8}]},
        headers=ADMIN.headers,
    )
    assert r.status_code == 200, r.text
    assert r.json()["upserted"] == 1 and r.json()["chunks"] > 10
    hits = await rag(client, "stage 100 climbs the pass", filter={"doc_id": "big"})
    assert len(hits) == r.json()["chunks"]
    last = LONG.split(". ")[-1]
    assert any(last[:40] in h["text"] for h in hits)  # the end of the document is searchable

    r = await client.delete("/documents/big?tenant=t1", headers=ADMIN.headers)
    assert r.status_code == 200, r.text
    assert await rag(client, "stage 100 climbs the pass", filter={"doc_id": "big"}) == []


async def test_distinct_docs_gives_one_passage_per_document_and_still_top_n(
    gateway: tuple[httpx.AsyncClient, Path],
) -> None:
    client, _ = gateway
    docs = [{"id": "dl", "text": LONG * 4, "topic": "distinct"}]
    docs += [
        {"id": f"ds{i}", "text": f"Stage {i} of a short tour with one climb.", "topic": "distinct"}
        for i in range(5)
    ]
    r = await client.post("/documents", json={"tenant": "t1", "documents": docs}, headers=ADMIN.headers)
    assert r.status_code == 200, r.text
    chunks_of_long = r.json()["chunks"] - 5
    assert chunks_of_long > 10

    q = {"q": "stage climbs the pass before the long descent", "filter": {"topic": "distinct"}}
    plain = await rag(client, **q, top_n=4, k=4)
    assert [h["payload"]["doc_id"] for h in plain].count("dl") >= 2  # chunks of one document crowd in
    for k, top_n in ((4, 4), (6, 6), (50, 6), (3, 2)):
        hits = await rag(client, **q, k=k, top_n=top_n, distinct_docs=True)
        ids = [h["payload"]["doc_id"] for h in hits]
        assert len(ids) == len(set(ids)) == min(top_n, 6), (k, top_n, ids)
    # one document's best chunk is the one the plain search ranks first among its chunks
    best_plain = next(h for h in await rag(client, **q) if h["payload"]["doc_id"] == "dl")
    best_distinct = next(
        h for h in await rag(client, **q, distinct_docs=True) if h["payload"]["doc_id"] == "dl"
    )
    assert best_distinct["id"] == best_plain["id"]


async def test_admin_collection_reports_the_engines_numbers(gateway: tuple[httpx.AsyncClient, Path]) -> None:
    client, _ = gateway
    assert_json_error(await client.get("/admin/collection", headers=READER.headers), 403, "forbidden")
    first = {"tenant": "t9", "documents": [{"id": "c-first", "text": "the collection exists"}]}
    assert (await client.post("/documents", json=first, headers=ADMIN.headers)).status_code == 200
    before = (await client.get("/admin/collection", headers=ADMIN.headers)).json()["result"]["points_count"]
    r = await client.post(
        "/documents",
        json={"tenant": "t9", "documents": [{"id": f"c{i}", "text": f"count me {i}"} for i in range(7)]},
        headers=ADMIN.headers,
    )
    assert r.status_code == 200, r.text
    r = await client.get("/admin/collection", headers=ADMIN.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok"
    result = body["result"]
    assert result["points_count"] == before + 7  # the engine's own count of what was written
    assert {"tenant", "doc_id"} <= set(result["payload_schema"])
    assert result["config"]["params"]["vectors"]["size"] == 384
    gw = result["gateway"]
    assert gw["backend"] == "embedded" and gw["embedder"]["dim"] == 384
    assert gw["last_write_at"] is not None and gw["generation"] is None  # the answer cache is off


async def test_a_document_over_one_mebibyte_is_422(gateway: tuple[httpx.AsyncClient, Path]) -> None:
    """Up to 1 MiB of text is taken (and chunked); one character more is refused, naming `text`
    (this module's body limit is the default 4 MiB, so the document itself is what is refused)."""
    from app.document_in import MAX_TEXT_CHARS

    client, _ = gateway
    too_long = {"tenant": "t1", "documents": [{"id": "huge", "text": "a " * (MAX_TEXT_CHARS // 2) + "b"}]}
    r = await client.post("/documents", json=too_long, headers=ADMIN.headers)
    err = assert_json_error(r, 422, "invalid_request")
    assert "text" in err["message"]
    assert MAX_TEXT_CHARS == 1024 * 1024


async def test_a_pruned_job_is_404(gateway: tuple[httpx.AsyncClient, Path]) -> None:
    """A finished job's record outlives RAG_JOBS__KEEP_DAYS only until the next prune (one runs
    after every job); its id then answers 404 like an id that never was."""
    from app.job_store import JobStore

    client, jobs_dir = gateway
    store = JobStore(jobs_dir)
    old = store.new("t1")
    old.state, old.finished_at = "succeeded", time.time() - 30 * 86400
    store.save(old)
    assert (await client.get(f"/jobs/{old.job_id}", headers=ADMIN.headers)).status_code == 200
    body = json.dumps({"id": "prune-trigger", "text": "a job whose end prunes old records"}).encode()
    r = await client.post("/jobs/ingest?tenant=t1", content=body, headers={**NDJSON, **ADMIN.headers})
    assert r.status_code == 202, r.text
    assert (await finished(client, r.headers["location"]))["state"] == "succeeded"
    for _ in range(500):
        r = await client.get(f"/jobs/{old.job_id}", headers=ADMIN.headers)
        if r.status_code != 200:
            break
        await asyncio.sleep(0.01)
    assert_json_error(r, 404, "not_found")
    assert not (jobs_dir / old.job_id).exists()
    listed = (await client.get("/jobs", headers=ADMIN.headers)).json()["jobs"]
    assert old.job_id not in [j["job_id"] for j in listed]


async def test_uploads_past_the_unfinished_jobs_limit_are_503(model_dir: Path, tmp_path: Path) -> None:
    """RAG_JOBS__MAX_UNFINISHED bounds the uploads waiting on the data volume. The one job here is
    `running` in another process sharing the directory (it holds the job's lock), so it stays
    unfinished while the test runs, whatever the timing."""
    from app.job_store import JobStore
    from app.jobs import job_lock

    store = JobStore(tmp_path / "jobs")
    other = store.new("t1")
    other.state = "running"
    store.save(other)
    store.input_path(other.job_id).write_text('{"id": "x", "text": "y"}\n')
    settings = auth_settings(
        model_dir, tmp_path / "qdrant", None, [ADMIN], jobs={"max_unfinished": 1, "dir": str(store.root)}
    )
    with job_lock(store, other.job_id) as mine:
        assert mine
        async with serve(settings) as (client, _):
            body = b'{"id": "a", "text": "one more job"}\n'
            r = await client.post("/jobs/ingest?tenant=t1", content=body, headers={**NDJSON, **ADMIN.headers})
            assert_json_error(r, 503, "overloaded")
            assert r.headers["retry-after"]
            assert sorted(p.name for p in store.root.iterdir()) == [other.job_id]  # nothing taken
            assert (await client.get(f"/jobs/{other.job_id}", headers=ADMIN.headers)).json()[
                "state"
            ] == "running"
