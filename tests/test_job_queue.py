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
from collections.abc import AsyncIterator, Iterator
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
from app.job_queue_redis import GROUP, RedisQueue
from app.job_store import FINISHED, Job, JobStore
from app.jobs import JobRunner

LEASE_S = 1.5


class Sink:
    """Takes batches as ingestion would, without a model; the gate holds every batch while set."""

    def __init__(self) -> None:
        self.docs: list[str] = []
        self.gate: asyncio.Event | None = None
        self.delay_s = 0.0  # each batch takes this long

    async def __call__(self, docs: list[Document]) -> IngestStats:
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(self.delay_s)
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


@pytest.fixture(autouse=True)
def workers_stop(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every runner a test stopped has stopped (a cancellation swallowed under redis-py once
    left a worker running for good, and its test waiting)."""
    yield
    stuck = [r.getMessage() for r in caplog.records if "did not stop" in r.getMessage()]
    assert not stuck, stuck


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


def worker(store: JobStore, redis_url: str, prefix: str, log: Path, *flags: str) -> subprocess.Popen[bytes]:
    """A replica's job worker in a process of its own (tests/support/queue_worker.py)."""
    script = ["tests/support/queue_worker.py", str(store.root), redis_url, prefix, str(LEASE_S), str(log)]
    return subprocess.Popen(
        [sys.executable, "-P", *script, *flags],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("RAG_")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def drained(redis: Redis, prefix: str) -> None:
    """Every entry acknowledged and deleted (an entry added twice, by a start-up racing a submit,
    is dropped once its job is finished)."""
    for _ in range(500):
        pending: Any = await redis.xpending(f"{prefix}:queue", GROUP)
        if await redis.xlen(f"{prefix}:queue") == 0 and pending["pending"] == 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"entries left: {await redis.xrange(f'{prefix}:queue')}")


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
        await drained(redis, prefix)
    finally:
        await a.stop()
        await b.stop()


async def test_a_replica_killed_mid_job_is_resumed_by_another_after_its_lease(
    store: JobStore, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    job = upload(store, 200)
    store.save(job)
    log = tmp_path / "killed.log"
    proc = worker(store, redis_url, prefix, log)
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


async def test_a_job_longer_than_many_leases_stays_with_its_worker(
    store: JobStore, redis_url: str, prefix: str, redis: Redis
) -> None:
    """The lease is renewed while the job runs: a second replica, idle and asking for work the
    whole time, never takes it over."""
    slow, idle = Sink(), Sink()
    slow.delay_s = LEASE_S / 5  # 20 batches: about 4 leases
    a = replica(store, redis_url, prefix, slow, batch_docs=2)
    await a.start()
    job = upload(store, 40)
    await a.submit(job)
    await until(lambda: a.current == job.job_id)
    b = replica(store, redis_url, prefix, idle)
    await b.start()
    try:
        done = await finished(store, job.job_id)
        assert done.state == "succeeded" and done.resumed == 0, done
        assert idle.docs == [] and sorted(slow.docs) == sorted(f"d{i}" for i in range(40))
        await drained(redis, prefix)
    finally:
        await a.stop()
        await b.stop()


async def test_a_stalled_worker_writes_nothing_of_the_job_after_another_took_it(
    store: JobStore, redis_url: str, prefix: str, redis: Redis, tmp_path: Path
) -> None:
    """A worker whose whole process stops for longer than a lease (a pause, a frozen VM) finds,
    when it wakes, that another replica took the job: it gives the job up at its next write, so
    the job's state is the other replica's, succeeded, and stays so."""
    job = upload(store, 60)
    store.save(job)
    log = tmp_path / "stalled.log"
    proc = worker(store, redis_url, prefix, log, "--stall-after", "15", "--stall-s", str(4 * LEASE_S))
    sink = Sink()
    other = replica(store, redis_url, prefix, sink)
    try:
        sender = RedisQueue(redis_url, prefix, LEASE_S, unfinished(store))
        await sender.put(job.job_id)
        await sender.aclose()
        await until(lambda: log.exists() and len(log.read_text().split()) >= 15)
        await other.start()
        done = await finished(store, job.job_id)
        assert done.state == "succeeded" and done.resumed == 1 and done.documents == 60, done
        await until(lambda: "STALL-END" in log.read_text(), timeout_s=10 * LEASE_S)
        await asyncio.sleep(2 * LEASE_S)  # the stalled worker has woken and had time to write
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        after = store.load(job.job_id)
        assert after is not None and after.state == "succeeded" and after.documents == 60, after
        stalled = log.read_text().split()
        woke = stalled[stalled.index("STALL-END") + 1 :]
        assert len(woke) <= 5, woke  # at most the batch it held when it stopped
        await drained(redis, prefix)
    finally:
        await other.stop()
        proc.kill()
        proc.wait(10)


async def test_a_cancel_on_one_replica_stops_a_job_running_on_another(
    store: JobStore, redis_url: str, prefix: str
) -> None:
    runs, asks = Sink(), Sink()
    runs.gate = asyncio.Event()
    a = replica(store, redis_url, prefix, runs)
    b = replica(store, redis_url, prefix, asks)
    await a.start()
    try:
        job = upload(store, 30)
        await a.submit(job)
        await until(lambda: a.current == job.job_id)
        await b.start()
        asked = await b.cancel(job.job_id)
        assert asked is not None and asked.state == "running"
        runs.gate.set()
        done = await finished(store, job.job_id)
        assert done.state == "cancelled" and done.documents == 5, done  # after the batch it held
        assert asks.docs == []
    finally:
        await a.stop()
        await b.stop()


async def test_a_cancel_while_a_worker_takes_the_job_wins(
    store: JobStore, redis_url: str, prefix: str
) -> None:
    """A queued job whose lease a worker holds (it is just taking it) is not cancelled under it;
    the cancel file stops it before it starts."""
    sink = Sink()
    runner = replica(store, redis_url, prefix, sink)
    job = upload(store, 10)
    store.save(job)
    async with runner.queue.lease(job.job_id) as held:  # a worker taking it
        assert held
        asked = await runner.cancel(job.job_id)
        assert asked is not None and asked.state == "queued"  # not written under the worker
    await runner.start()
    try:
        await runner.queue.put(job.job_id)
        done = await finished(store, job.job_id)
        assert done.state == "cancelled" and done.error == "cancelled before it started", done
        assert sink.docs == []
    finally:
        await runner.stop()


async def test_redis_paused_longer_than_a_lease_mid_job(
    store: JobStore, redis_url: str, prefix: str, redis_server: RedisServer
) -> None:
    """Redis stops answering for two leases while a job runs: the worker cannot renew, gives
    the job up at its next write, and takes it again once Redis answers and the lease has run
    out; the job ends once, every document written."""
    sink = Sink()
    sink.gate = asyncio.Event()
    sink.delay_s = LEASE_S / 5  # the job lasts longer than the lease left when Redis stops
    runner = replica(store, redis_url, prefix, sink, batch_docs=5)
    await runner.start()
    try:
        job = upload(store, 40)
        await runner.submit(job)
        await until(lambda: runner.current == job.job_id)
        redis_server.pause()
        try:
            sink.gate.set()
            await asyncio.sleep(2 * LEASE_S)
        finally:
            redis_server.resume()
        done = await finished(store, job.job_id)
        assert done.state == "succeeded" and done.documents == 40 and done.resumed == 1, done
        assert set(sink.docs) == {f"d{i}" for i in range(40)}
        assert len(sink.docs) <= 45  # the batch in flight when the lease ran out, at most, again
    finally:
        await runner.stop()


async def test_a_job_never_added_to_the_stream_is_found_by_a_running_worker(
    store: JobStore, redis_url: str, prefix: str
) -> None:
    """A replica saved a job and died before adding it: a worker that never lost Redis adds it
    at its next reconciliation with the directory."""
    sink = Sink()
    queue = RedisQueue(redis_url, prefix, LEASE_S, unfinished(store), reconcile_s=LEASE_S)
    runner = JobRunner(store, parser_for, sink, queue=queue)
    await runner.start()
    try:
        job = upload(store, 6)
        store.save(job)  # on disk, queued, in no stream
        done = await finished(store, job.job_id, timeout_s=10 * LEASE_S)
        assert done.state == "succeeded" and done.documents == 6
    finally:
        await runner.stop()


async def test_an_unreadable_record_is_taken_again_not_dropped(
    store: JobStore, redis_url: str, prefix: str
) -> None:
    """A state file that cannot be read for a moment (a network volume) leaves the entry
    pending: once it reads again, the job runs."""
    sink = Sink()
    runner = replica(store, redis_url, prefix, sink)
    job = upload(store, 4)
    store.save(job)
    state = store.root / job.job_id / "state.json"
    good = state.read_bytes()
    state.write_bytes(b"{not json")
    await runner.start()  # reconciles: the job's directory is unfinished? not readable: not added
    try:
        await runner.queue.put(job.job_id)
        await asyncio.sleep(LEASE_S)
        assert sink.docs == []
        state.write_bytes(good)
        done = await finished(store, job.job_id, timeout_s=10 * LEASE_S)
        assert done.state == "succeeded" and done.documents == 4
    finally:
        await runner.stop()


async def test_a_dead_workers_job_behind_many_live_ones_is_reclaimed(
    store: JobStore, redis_url: str, prefix: str, redis: Redis
) -> None:
    """XAUTOCLAIM looks at a few pending entries per call: the claim goes on from where the last
    one stopped, so a dead worker's entry behind a dozen live ones is still found."""
    stream = f"{prefix}:queue"
    await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
    live = [await redis.xadd(stream, {"job": f"{n:032x}"}) for n in range(1, 13)]
    job = upload(store, 3)
    store.save(job)
    await redis.xadd(stream, {"job": job.job_id})
    await redis.xreadgroup(GROUP, "alive", {stream: ">"}, count=13)
    await redis.xreadgroup(GROUP, "dead", {stream: "0"}, count=1)  # no-op: entries are "alive"'s
    await redis.xclaim(stream, GROUP, "dead", 0, [(await redis.xrange(stream))[-1][0]], justid=True)

    async def renew() -> None:  # the live worker renews its twelve
        while True:
            await redis.xclaim(stream, GROUP, "alive", 0, live, justid=True)
            await asyncio.sleep(LEASE_S / 5)

    renewing = asyncio.create_task(renew())
    sink = Sink()
    runner = replica(store, redis_url, prefix, sink)
    await runner.start()
    try:
        done = await finished(store, job.job_id, timeout_s=10 * LEASE_S)
        assert done.state == "succeeded" and sink.docs == ["d0", "d1", "d2"]
    finally:
        renewing.cancel()
        await runner.stop()


def test_a_job_resumed_too_often_fails_with_its_reason(store: JobStore) -> None:
    job = upload(store, 3)
    job.state, job.resumed, job.committed_line = "running", 5, 2
    store.save(job)

    async def go() -> Job:
        runner = JobRunner(store, parser_for, Sink())
        await runner.start()
        await runner.stop()
        out = store.load(job.job_id)
        assert out is not None
        return out

    out = asyncio.run(go())
    assert out.state == "failed" and out.error is not None and "resumed 5 times" in out.error
    assert "lines to 2 written" in out.error


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
