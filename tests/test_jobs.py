"""Ingestion jobs on the real engine and model: counts, bad lines reported by line number while
the job goes on, idempotent re-runs that skip unchanged documents, cancellation, and a worker
stopped mid-job (as a restart leaves it) resumed by a new runner after its last committed batch."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from app.chunking import Chunker
from app.clients.embedder import OnnxEmbedder
from app.clients.vectorstore import EdgeStore
from app.ingest import Document, IngestStats, ingest_documents
from app.jobs import Job, JobRunner, JobStore
from app.settings import QdrantSettings


def parser_for(tenant: str) -> Any:
    return lambda line: parse(line, tenant)


def parse(line: bytes, tenant: str) -> Document:
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise ValueError("line is not JSON") from exc
    if (
        not isinstance(obj, dict)
        or not isinstance(obj.get("id"), str)
        or not isinstance(obj.get("text"), str)
    ):
        raise ValueError("a document needs a string id and text")
    return Document(
        obj["id"], obj["text"], "t1", extra={k: v for k, v in obj.items() if k not in ("id", "text")}
    )


class Rig:
    def __init__(self, root: Path, model_dir: Path) -> None:
        self.store = EdgeStore.from_settings(QdrantSettings(path=root / "qdrant"))
        self.embedder = OnnxEmbedder(model_dir)
        self.chunker = Chunker.for_model(model_dir, 64, 8)
        self.jobs = JobStore(root / "jobs")
        self.batches = 0
        self.gate: asyncio.Event | None = None  # when set, each batch waits for it
        self.permits: asyncio.Semaphore | None = None  # when set, each batch takes one
        self.asking = 0  # batches that asked for a permit

    async def ingest(self, docs: list[Document]) -> IngestStats:
        if self.gate is not None:
            await self.gate.wait()
        if self.permits is not None:
            self.asking += 1
            await self.permits.acquire()
        self.batches += 1
        return await ingest_documents(
            self.store, self.embedder, docs, chunker=self.chunker, verify=False, optimize=False
        )

    def runner(self) -> JobRunner:
        return JobRunner(self.jobs, parser_for, self.ingest, batch_docs=4)

    def upload(self, lines: list[str]) -> Job:
        job = self.jobs.new("t1")
        self.jobs.input_path(job.job_id).write_text("".join(line + "\n" for line in lines))
        return job


@pytest.fixture
async def rig(tmp_path: Path, model_dir: Path) -> AsyncIterator[Rig]:
    r = Rig(tmp_path, model_dir)
    yield r
    await r.store.aclose()


def docs(n: int, prefix: str = "d") -> list[str]:
    return [
        json.dumps({"id": f"{prefix}{i}", "text": f"passage {i} about mountain passes", "n": i})
        for i in range(n)
    ]


async def finished(rig: Rig, job_id: str) -> dict[str, Any]:
    for _ in range(2000):
        job = rig.jobs.load(job_id)
        assert job is not None
        if job.state in ("succeeded", "failed", "cancelled"):
            return job.public()
        await asyncio.sleep(0.01)
    raise AssertionError(f"job {job_id} did not finish")


async def test_counts_and_bad_lines_reported_while_the_job_goes_on(rig: Rig) -> None:
    long = " ".join(f"Sentence {i} on pacing long climbs." for i in range(60))
    lines = [
        *docs(5),
        "{not json",
        "",
        json.dumps({"id": "no-text"}),
        json.dumps({"id": "long", "text": long}),
    ]
    runner = rig.runner()
    await runner.start()
    try:
        job = rig.upload(lines)
        await runner.submit(job)
        out = await finished(rig, job.job_id)
    finally:
        await runner.stop()
    chunks_of_long = len(rig.chunker.split(long))
    assert chunks_of_long > 1
    assert out["state"] == "succeeded", out
    assert (out["lines"], out["documents"], out["skipped_unchanged"]) == (9, 6, 0)
    assert out["chunks"] == out["upserted"] == 5 + chunks_of_long
    assert out["failed_count"] == 2
    assert out["failed"] == [
        {"line": 6, "error": "line is not JSON"},
        {"line": 8, "error": "a document needs a string id and text"},
    ]
    assert out["started_at"] <= out["finished_at"]
    assert await rig.store.count("t1") == 5 + chunks_of_long

    # the same file again: nothing re-embedded, every document skipped as unchanged
    runner = rig.runner()
    await runner.start()
    try:
        again = rig.upload(lines)
        await runner.submit(again)
        out2 = await finished(rig, again.job_id)
    finally:
        await runner.stop()
    assert (out2["state"], out2["documents"], out2["skipped_unchanged"], out2["upserted"]) == (
        "succeeded",
        6,
        6,
        0,
    )
    assert await rig.store.count("t1") == 5 + chunks_of_long


async def test_a_queued_job_is_cancelled_at_once_and_a_running_one_after_its_batch(rig: Rig) -> None:
    rig.gate = asyncio.Event()
    runner = rig.runner()
    await runner.start()
    try:
        first = rig.upload(docs(12))
        second = rig.upload(docs(3, "x"))
        await runner.submit(first)
        await runner.submit(second)
        while runner.current != first.job_id:
            await asyncio.sleep(0.01)
        cancelled = await runner.cancel(second.job_id)
        assert cancelled is not None and cancelled.state == "cancelled"
        await runner.cancel(first.job_id)
        rig.gate.set()
        out = await finished(rig, first.job_id)
    finally:
        await runner.stop()
    assert out["state"] == "cancelled"
    assert out["documents"] == 4 and out["lines"] == 4  # one batch of four went in, and stays
    assert "earlier lines stay written" in out["error"]
    assert await rig.store.count("t1") == 4
    assert rig.jobs.load(second.job_id).state == "cancelled"  # type: ignore[union-attr]


async def test_a_job_interrupted_mid_way_resumes_after_its_last_committed_batch(rig: Rig) -> None:
    rig.permits = asyncio.Semaphore(1)  # one batch may go in; the second waits
    runner = rig.runner()
    await runner.start()
    job = rig.upload(docs(10))
    await runner.submit(job)
    while (j := rig.jobs.load(job.job_id)) is None or j.committed_line < 4:
        await asyncio.sleep(0.005)
    while rig.asking < 2:  # the second batch is waiting for its permit
        await asyncio.sleep(0.005)
    await runner.stop()  # stop the worker there, as a dying process would
    on_disk = rig.jobs.load(job.job_id)
    assert on_disk is not None and on_disk.state == "running" and on_disk.committed_line == 4
    assert rig.batches == 1

    rig.permits = None
    again = rig.runner()  # a new process finds it
    await again.start()
    try:
        out = await finished(rig, job.job_id)
    finally:
        await again.stop()
    assert out["state"] == "succeeded" and out["resumed"] == 1
    assert (out["lines"], out["documents"], out["upserted"]) == (10, 10, 10)
    assert await rig.store.count("t1") == 10


def test_job_ids_from_clients_never_become_paths(tmp_path: Path) -> None:
    jobs = JobStore(tmp_path / "jobs")
    (tmp_path / "state.json").write_text("{}")
    for bad in ("..", "../jobs", "a" * 31, "A" * 32, "", "0" * 31 + "/"):
        assert jobs.load(bad) is None
    assert jobs.all() == []
