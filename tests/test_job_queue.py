"""The shared job queue (`RAG_JOBS__QUEUE=redis`) on a real redis-server: replicas sharing the jobs
directory run each job once, and several at a time; a replica killed mid-job (SIGKILL, a real
process) leaves its job to another, which resumes it after the last committed batch once the
lease has run out; a worker whose lease is taken stops at once; Redis that forgets the queue
(restarted without persistence) or is down when a job is submitted loses no job; and a gateway
on the queue runs an upload end to end."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from support.app import make_settings, running_app
from support.keys import make_key
from support.paths import ROOT
from support.redis import RedisServer

from app.document_in import line_parser
from app.ingest import Document, IngestStats
from app.job_queue import GROUP, RedisQueue
from app.job_store import FINISHED, Job, JobStore
from app.jobs import JobRunner

LEASE_S = 1.5


class Sink:
    """Takes batches as ingestion would, without a model; the gate holds every batch while set."""

    def __init__(self) -> None:
        self.docs: list[str] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, docs: list[Document]) -> IngestStats:
        if self.gate is not None:
            await self.gate.wait()
        self.docs += [d.doc_id for d in docs]
        return IngestStats(documents=len(docs), chunks=len(docs), upserted=len(docs), skipped_unchanged=0)


def parser_for(tenant: str) -> Any:
    return line_parser(tenant, {})


def upload(store: JobStore, n: int, prefix: str = "d") -> Job:
    job = store.new("t1")
    data = "".join(json.dumps({"id": f"{prefix}{i}", "text": f"passage {i}"}) + "\n" for i in range(n))
    store.input_path(job.job_id).write_bytes(data.encode())
    job.bytes = len(data)
    return job


def unfinished(store: JobStore) -> Any:
    return lambda: [j.job_id for j in store.all() if j.state not in FINISHED]


@pytest.fixture
def prefix() -> str:
    return f"jobs:test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(tmp_path / "jobs")


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    r = Redis.from_url(redis_url)
    yield r
    await r.aclose()


def replica(store: JobStore, redis_url: str, prefix: str, sink: Sink, batch_docs: int = 5) -> JobRunner:
    queue = RedisQueue(redis_url, prefix, LEASE_S, unfinished(store))
    return JobRunner(store, parser_for, sink, batch_docs=batch_docs, queue=queue)


async def finished(store: JobStore, job_id: str, timeout_s: float = 60.0) -> Job:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        job = store.load(job_id)
        assert job is not None
        if job.state in FINISHED:
            return job
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish: {store.load(job_id)}")


async def until(check: Any, timeout_s: float = 30.0) -> None:
    end = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < end, "condition not reached"
        await asyncio.sleep(0.02)


async def test_replicas_share_the_queue_and_run_each_job_once(
    store: JobStore, redis_url: str, prefix: str, redis: Redis
) -> None:
    sinks = [Sink(), Sink()]
    gate = asyncio.Event()
    for s in sinks:
        s.gate = gate
    a, b = (replica(store, redis_url, prefix, s) for s in sinks)
    await a.start()
    await b.start()
    try:
        jobs = [upload(store, 12, prefix=f"j{n}-") for n in range(4)]
        for n, job in enumerate(jobs):  # submitted through either replica
            await (a if n % 2 else b).submit(job)
        # each replica holds one job while the batches are held: both take from one queue
        await until(lambda: a.current is not None and b.current is not None)
        assert a.current != b.current
        gate.set()
        for job in jobs:
            done = await finished(store, job.job_id)
            assert done.state == "succeeded" and done.documents == 12 and done.resumed == 0, done
        taken = sinks[0].docs + sinks[1].docs
        assert sorted(taken) == sorted(f"j{n}-{i}" for n in range(4) for i in range(12))  # once each
        await until(lambda: a.current is None and b.current is None)
        assert await redis.xlen(f"{prefix}:queue") == 0  # acknowledged and deleted
        pending: Any = await redis.xpending(f"{prefix}:queue", GROUP)
        assert pending["pending"] == 0
    finally:
        await a.stop()
        await b.stop()


async def test_a_replica_killed_mid_job_is_resumed_by_another_after_its_lease(
    store: JobStore, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    job = upload(store, 200)
    store.save(job)
    log = tmp_path / "killed.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-P",
            "tests/support/queue_worker.py",
            str(store.root),
            redis_url,
            prefix,
            str(LEASE_S),
            str(log),
        ],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("RAG_")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        sender = RedisQueue(redis_url, prefix, LEASE_S, unfinished(store))
        await sender.put(job.job_id)
        await sender.aclose()

        def committed() -> int:
            j = store.load(job.job_id)
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            return j.committed_line if j is not None else 0

        await until(lambda: committed() >= 20)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    at_kill = store.load(job.job_id)
    assert at_kill is not None and at_kill.state == "running"
    killed = log.read_text().split()
    sink = Sink()
    other = replica(store, redis_url, prefix, sink)
    await other.start()
    try:
        done = await finished(store, job.job_id)
    finally:
        await other.stop()
    assert done.state == "succeeded" and done.resumed == 1, done
    assert done.documents == 200 and done.committed_line == 200
    # resumed after the last committed batch: nothing before it is taken again
    assert sink.docs[0] == f"d{at_kill.committed_line}"
    assert set(killed) | set(sink.docs) == {f"d{i}" for i in range(200)}
    # the batch the kill interrupted may be taken twice; nothing else is
    assert len(killed) + len(sink.docs) - 200 <= 5


async def test_a_worker_whose_lease_is_taken_stops_and_the_job_resumes_once(
    store: JobStore, redis_url: str, prefix: str, redis: Redis
) -> None:
    sink = Sink()
    sink.gate = asyncio.Event()
    runner = replica(store, redis_url, prefix, sink)
    await runner.start()
    try:
        job = upload(store, 30)
        await runner.submit(job)
        await until(lambda: runner.current == job.job_id)
        # another worker takes the lease (as after a pause longer than a lease)
        await redis.set(f"{prefix}:lease:{job.job_id}", b"another-worker", px=int(3 * LEASE_S * 1000))
        await until(lambda: runner.current is None, timeout_s=LEASE_S * 3)
        sink.gate.set()  # the batch it held is cancelled with the job: it took nothing
        await asyncio.sleep(LEASE_S)
        assert sink.docs == []
        running = store.load(job.job_id)
        assert running is not None and running.state == "running" and running.committed_line == 0
        # once the other lease runs out, the entry comes round again and the job resumes here
        done = await finished(store, job.job_id, timeout_s=30)
        assert done.state == "succeeded" and done.resumed == 1 and done.documents == 30, done
        assert sorted(sink.docs) == sorted(f"d{i}" for i in range(30))
    finally:
        await runner.stop()


async def test_a_queue_redis_forgot_is_rebuilt_from_the_jobs_directory(
    store: JobStore, redis_url: str, prefix: str, redis_server: RedisServer
) -> None:
    sink = Sink()
    runner = replica(store, redis_url, prefix, sink)
    first = upload(store, 7, prefix="a")
    store.save(first)  # on disk, never in the stream (a crash between the two)
    await runner.start()
    try:
        assert (await finished(store, first.job_id)).state == "succeeded"
        redis_server.kill()  # Redis without persistence: the queue and the group are gone
        second = upload(store, 9, prefix="b")
        await runner.submit(second)  # no error: the job waits on disk, queued
        assert (loaded := store.load(second.job_id)) is not None and loaded.state == "queued"
        redis_server.start()
        done = await finished(store, second.job_id, timeout_s=60)
        assert done.state == "succeeded" and done.documents == 9
        assert sorted(sink.docs) == sorted([f"a{i}" for i in range(7)] + [f"b{i}" for i in range(9)])
    finally:
        await runner.stop()


ADMIN = make_key("admin-queue", "default", admin=True)


async def test_a_gateway_on_the_shared_queue_runs_an_upload(
    model_dir: Path, tmp_path: Path, redis_url: str, redis: Redis
) -> None:
    settings = make_settings(
        model_dir,
        tmp_path / "qdrant",
        redis_url,
        qdrant={"url": ":memory:"},
        auth={"keys": [ADMIN.entry()]},
        jobs={"dir": tmp_path / "jobs", "queue": "redis", "lease_s": LEASE_S},
    )
    body = "".join(
        json.dumps({"id": f"q{i}", "text": f"the ferry to island {i} leaves at dawn"}) + "\n"
        for i in range(20)
    )
    async with running_app(settings) as (client, _app):
        r = await client.post(
            "/jobs/ingest?tenant=default",
            content=body,
            headers={**ADMIN.headers, "content-type": "application/x-ndjson"},
        )
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        for _ in range(1500):
            job = (await client.get(f"/jobs/{job_id}", headers=ADMIN.headers)).json()
            if job["state"] in FINISHED:
                break
            await asyncio.sleep(0.02)
        assert job["state"] == "succeeded" and job["upserted"] == 20, job
        hit = await client.post(
            "/rag",
            json={"q": "the ferry to island 7 leaves at dawn", "k": 3, "rerank": False},
            headers=ADMIN.headers,
        )
        assert hit.status_code == 200 and hit.json()["results"][0]["payload"]["doc_id"] == "q7", hit.text
        assert await redis.xlen("jobs:rag_docs:queue") == 0


def test_the_shared_queue_needs_redis_and_a_qdrant_server() -> None:
    from pydantic import ValidationError

    from app.settings import Settings

    with pytest.raises(ValidationError, match=r"jobs\.queue=redis needs redis\.url and qdrant\.url"):
        Settings(jobs={"queue": "redis"})
    with pytest.raises(ValidationError, match=r"jobs\.queue=redis needs"):
        Settings(jobs={"queue": "redis"}, qdrant={"url": "http://qdrant:6333"}, redis={"url": ""})
    ok = Settings(jobs={"queue": "redis"}, qdrant={"url": "http://qdrant:6333"})
    assert ok.jobs.queue == "redis"
