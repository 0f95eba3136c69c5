"""Ingestion jobs leave nothing behind they should not: the upload is removed as soon as a job
ends (succeeded, failed or cancelled) while its record keeps the audit (bad lines with number,
id and error; a failed job's reason and the last line written); records of finished jobs are
pruned by age and by count; an upload no process finishes is removed; two runners sharing the
jobs directory (two workers of one pod) run a job once, and either can cancel it."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from app.document_in import line_parser
from app.errors import DependencyUnavailable
from app.ingest import Document, IngestStats
from app.job_store import Job, JobStore, read_lines
from app.jobs import JobRunner, Retention


class Sink:
    """Takes batches as ingestion would, without a model: what the tests here look at is the
    runner's bookkeeping, not the embedding (tests/test_jobs.py covers that on the real model)."""

    def __init__(self) -> None:
        self.docs: list[str] = []
        self.fail_after: int | None = None  # documents taken before every batch fails
        self.gate: asyncio.Event | None = None

    async def __call__(self, docs: list[Document]) -> IngestStats:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_after is not None and len(self.docs) >= self.fail_after:
            raise DependencyUnavailable("embedder", "the embedder is down")
        self.docs += [d.doc_id for d in docs]
        return IngestStats(documents=len(docs), chunks=len(docs), upserted=len(docs), skipped_unchanged=0)


def parser_for(tenant: str) -> Any:
    return line_parser(tenant, {"source": "keyword"})


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(tmp_path / "jobs")


def lines(n: int) -> list[str]:
    return [json.dumps({"id": f"d{i}", "text": f"passage {i}"}) for i in range(n)]


def upload(store: JobStore, body: list[str]) -> Job:
    job = store.new("t1")
    data = "".join(line + "\n" for line in body).encode()
    store.input_path(job.job_id).write_bytes(data)
    job.bytes = len(data)
    return job


@pytest.fixture
def sink() -> Sink:
    return Sink()


async def finished(store: JobStore, job_id: str) -> Job:
    for _ in range(2000):
        job = store.load(job_id)
        assert job is not None
        if job.state in ("succeeded", "failed", "cancelled"):
            return job
        await asyncio.sleep(0.01)
    raise AssertionError(f"job {job_id} did not finish")


async def run(runner: JobRunner, store: JobStore, job: Job) -> Job:
    await runner.start()
    try:
        await runner.submit(job)
        return await finished(store, job.job_id)
    finally:
        await runner.stop()


async def test_a_succeeded_job_keeps_its_record_and_audit_not_its_upload(store: JobStore, sink: Sink) -> None:
    body = lines(6)
    body[2] = json.dumps({"id": "bad-source", "text": "x", "source": 7})  # the audit names the document
    body[3] = json.dumps({"id": "no text"})  # an id that is not an id is not repeated
    body[4] = "{broken"
    job = upload(store, body)
    out = await run(JobRunner(store, parser_for, sink, batch_docs=2), store, job)
    assert out.state == "succeeded"
    assert not store.input_path(job.job_id).exists()
    public = out.public()
    assert public["progress"] == 100.0 and public["bytes_done"] == public["bytes"] == job.bytes
    assert public["failed_count"] == 3
    assert public["failed"][0]["line"] == 3 and public["failed"][0]["id"] == "bad-source"
    assert "source" in public["failed"][0]["error"]
    assert public["failed"][1]["line"] == 4 and "id" not in public["failed"][1]
    assert public["failed"][2] == {"line": 5, "error": "line is not valid JSON"}
    assert sink.docs == ["d0", "d1", "d5"]


async def test_a_failed_job_says_how_far_it_got_and_drops_its_upload(store: JobStore, sink: Sink) -> None:
    sink.fail_after = 4
    job = upload(store, lines(10))
    out = await run(JobRunner(store, parser_for, sink, batch_docs=2), store, job)
    assert out.state == "failed"
    assert out.error is not None and "every line up to 4 is written" in out.error
    assert out.public()["progress"] == pytest.approx(40.0, abs=1)
    assert not store.input_path(job.job_id).exists()
    assert store.load(job.job_id) is not None  # the record stays for the audit


async def test_a_cancelled_job_drops_its_upload(store: JobStore, sink: Sink) -> None:
    job = upload(store, lines(4))
    runner = JobRunner(store, parser_for, sink)
    await runner.submit(job)  # queued, never started
    cancelled = await runner.cancel(job.job_id)
    assert cancelled is not None and cancelled.state == "cancelled"
    assert not store.input_path(job.job_id).exists()


async def test_a_job_whose_upload_vanished_fails_with_a_reason(store: JobStore, sink: Sink) -> None:
    job = upload(store, lines(4))
    store.input_path(job.job_id).unlink()
    out = await run(JobRunner(store, parser_for, sink), store, job)
    assert out.state == "failed" and out.error is not None and "upload the file again" in out.error
    assert str(store.root) not in out.error  # no server path in what a client reads


def finished_job(store: JobStore, age_s: float, state: str = "succeeded") -> Job:
    job = store.new("t1")
    job.state = state  # type: ignore[assignment]
    job.created_at = job.finished_at = time.time() - age_s
    store.save(job)
    return job


def test_records_are_pruned_by_age_and_by_count_and_unfinished_jobs_never(store: JobStore) -> None:
    old = finished_job(store, 3 * 86400, "failed")
    recent = [finished_job(store, 60 * i) for i in range(1, 5)]  # newest first
    queued = store.new("t1")
    queued.created_at = time.time() - 30 * 86400
    store.save(queued)
    store.input_path(queued.job_id).write_text("{}\n")
    leftover = recent[0]
    store.input_path(leftover.job_id).write_text("{}\n")  # died between record and removal

    removed = store.prune(keep_s=2 * 86400, keep_jobs=3, stale_upload_s=300)
    assert sorted(removed) == sorted([old.job_id, recent[3].job_id])
    assert store.load(old.job_id) is None and not (store.root / old.job_id).exists()
    assert [j.job_id for j in store.all() if j.state == "succeeded"] == [j.job_id for j in recent[:3]]
    assert not store.input_path(leftover.job_id).exists()
    assert store.load(queued.job_id) is not None and store.input_path(queued.job_id).exists()


def test_an_upload_no_process_finishes_is_removed_once_stale(store: JobStore) -> None:
    live = store.new("t1")
    store.input_path(live.job_id).write_text('{"id": "a"')
    dead = store.new("t1")
    store.input_path(dead.job_id).write_text('{"id": "b"')
    past = time.time() - 600
    for p in (store.input_path(dead.job_id), store.root / dead.job_id):
        os.utime(p, (past, past))
    assert store.prune(keep_s=86400, keep_jobs=10, stale_upload_s=300) == [dead.job_id]
    assert store.input_path(live.job_id).exists() and not (store.root / dead.job_id).exists()


async def test_the_runner_prunes_at_start_and_after_each_job(store: JobStore, sink: Sink) -> None:
    old = finished_job(store, 10 * 86400)
    runner = JobRunner(store, parser_for, sink, retention=Retention(keep_s=86400, keep_jobs=1))
    job = upload(store, lines(2))
    await runner.start()
    try:
        assert store.load(old.job_id) is None  # pruned at start
        keep = finished_job(store, 60)
        await runner.submit(job)
        await finished(store, job.job_id)
        for _ in range(500):
            if store.load(keep.job_id) is None:
                break
            await asyncio.sleep(0.01)
    finally:
        await runner.stop()
    assert store.load(keep.job_id) is None  # one record kept: the newest, the job just run
    assert store.load(job.job_id) is not None


def test_a_resumed_read_starts_at_the_committed_byte(tmp_path: Path) -> None:
    path = tmp_path / "in.ndjson"
    path.write_bytes(b"a\nbb\n\nccc\n")
    everything = list(read_lines(path, 0, 0))
    assert everything == [(1, 2, b"a\n"), (2, 5, b"bb\n"), (3, 6, b"\n"), (4, 10, b"ccc\n")]
    assert list(read_lines(path, 2, 5)) == everything[2:]
    assert list(read_lines(path, 2, 0)) == everything[2:]  # a record from before byte offsets


async def test_two_runners_on_one_directory_run_a_job_once_and_either_cancels(
    store: JobStore, sink: Sink
) -> None:
    sink.gate = asyncio.Event()
    a = JobRunner(store, parser_for, sink, batch_docs=2)
    job = upload(store, lines(8))
    await a.start()
    await a.submit(job)
    while a.current != job.job_id:
        await asyncio.sleep(0.01)
    b = JobRunner(store, parser_for, sink, batch_docs=2)  # a second worker starts meanwhile
    await b.start()
    try:
        assert await b.cancel(job.job_id) is not None  # asked of the worker that does not run it
        sink.gate.set()
        out = await finished(store, job.job_id)
    finally:
        await a.stop()
        await b.stop()
    assert out.state == "cancelled" and out.resumed == 0
    assert sink.docs == ["d0", "d1"]  # one batch, by one runner
