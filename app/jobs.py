"""Ingestion jobs: a JSON Lines file on disk (app/job_store.py), worked through in committed
batches by one worker per process (see docs/ARCHITECTURE.md, "Ingestion jobs").

Nothing is lost across restarts: the upload and the state (replaced atomically after every
committed batch) live under the data directory. A job whose worker died (even by SIGKILL) resumes
after its last committed line; a batch written but not committed is harmless to write again
(upserts by stable point ids). Where jobs wait, and how a job is held by one worker:
app/job_queue.py. A cancel is a file beside the state, seen by whichever process runs the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from app.ingest import Document, IngestStats
from app.job_queue import Claim, JobLost, JobQueue, LocalQueue, QueueUnavailable, job_lock
from app.job_store import FINISHED, JOB_ID, STATES, Job, JobState, JobStore, Retention, read_lines
from app.resilience.tasks import stop_task

__all__ = ["FINISHED", "Job", "JobRunner", "JobState", "JobStore", "Retention"]

log = logging.getLogger("rag.jobs")
MAX_REPORTED_FAILURES, MAX_RESUMES = 100, 5  # a job's bad lines reported; resumes before it fails
CANCEL, STOP_S = "cancel", 10.0

ParserFor = Callable[[str], Callable[[bytes], Document]]  # a tenant's line parser: ValueError for bad
IngestBatch = Callable[[list[Document]], Awaitable[IngestStats]]
RunJob = Callable[[Job], Awaitable[None]]  # a job of another kind (a reindex): raises to fail it


class JobRunner:
    """Runs queued jobs one at a time, in the order they were made."""

    def __init__(
        self,
        store: JobStore,
        parser_for: ParserFor,
        ingest_batch: IngestBatch,
        batch_docs: int = 64,
        on_change: Callable[[dict[str, int], int], None] | None = None,
        after: Callable[[Job], Awaitable[None]] | None = None,
        retention: Retention | None = None,
        queue: JobQueue | None = None,
    ) -> None:
        self.store = store
        self._parser_for = parser_for
        self._ingest = ingest_batch
        self.batch_docs = batch_docs
        self._on_change = on_change  # (jobs by state, documents just committed): the metrics
        self._after = after  # run once a job's last batch is in (the index build)
        self.retention = retention or Retention()
        self._states: dict[str, str] = {}
        self.queue: JobQueue = queue or LocalQueue(lambda job_id: job_lock(store, job_id))
        self._task: asyncio.Task[None] | None = None
        self._hold: Claim | None = None  # the job this worker runs, checked before its writes
        self._next_prune = 0.0
        self.current: str | None = None
        self.kinds: dict[str, RunJob] = {}  # kind -> how a job of it is run (ingest: built in)
        self.paused: Callable[[], bool] = lambda: False  # take no job now (the embedder refuses)

    async def start(self) -> None:
        """Prune, then queue every unfinished job, resuming those a dead process left running
        (a shared queue has them already, and resumes them under their lease)."""
        self.prune()
        for job in sorted(self.store.all(), key=lambda j: j.created_at):
            self._states[job.job_id] = job.state
            if self.queue.shared or job.state in FINISHED:
                continue
            if job.state == "running":
                with job_lock(self.store, job.job_id) as mine:
                    if not mine or not self._recover(job):
                        continue  # another live process runs it, or it cannot be resumed
            await self.queue.put(job.job_id)
        self._publish(0)
        with contextlib.suppress(QueueUnavailable):  # unreachable: the worker sets it up later
            await self.queue.prepare()
        self._task = asyncio.create_task(self._work(), name="ingest-jobs")

    def _recover(self, job: Job) -> bool:
        """A job found running whose worker is gone: an ingest job is queued again, to resume
        after its last committed line; another kind fails (it left the state of before or after)."""
        if job.kind != "ingest":
            self._finish(job, "failed", "the gateway stopped while the job ran; submit it again")
            log.warning("job failed by a restart", extra={"job_id": job.job_id, "kind": job.kind})
            return False
        line = job.committed_line
        if job.resumed >= MAX_RESUMES:  # (a batch that kills its gateway: out of memory?)
            why = f"resumed {job.resumed} times (its worker died or lost its lease); lines to {line} written"
            self._finish(job, "failed", why)
            log.error("job failed: resumed too often", extra={"job_id": job.job_id})
            return False
        job.state = "queued"
        job.resumed += 1
        self.save(job)
        log.warning("ingest job resumed after a restart", extra={"job_id": job.job_id, "after_line": line})
        return True

    async def stop(self) -> None:
        """Stop working; a job in progress stays `running`, resumed at next start (or elsewhere)."""
        if self._task is not None and not await stop_task(self._task, STOP_S):  # never hold a shutdown
            log.error("job worker did not stop in time", extra={"job_id": self.current})
        await self.queue.aclose()

    def unfinished(self) -> int:
        """Unfinished jobs of this process (a shared queue: of the shared directory)."""
        if self.queue.shared:
            self._states = {job.job_id: job.state for job in self.store.all()}
            self._publish(0)
        return sum(1 for state in self._states.values() if state not in FINISHED)

    async def submit(self, job: Job) -> None:
        self.store.save(job)
        self._notify(job, 0)
        try:
            await self.queue.put(job.job_id)
        except QueueUnavailable as exc:  # saved as queued: added when the worker reaches Redis
            log.warning(
                "job waits on disk: queue unreachable", extra={"job_id": job.job_id, "error": str(exc)}
            )

    async def cancel(self, job_id: str) -> Job | None:
        """Stop a job after its current batch; a queued one at once, under its lease (a worker
        that holds it sees the cancel file before it starts or after its batch)."""
        job = self.store.load(job_id)
        if job is None or job.state in FINISHED:
            return job
        with contextlib.suppress(FileNotFoundError):
            (self.store.root / job_id / CANCEL).touch()
        if job.state == "queued":
            async with self.queue.lease(job_id) as mine:
                job = self.store.load(job_id) if mine else None  # read under the lease
                if job is not None and job.state == "queued":
                    self._finish(job, "cancelled", "cancelled before it started")
        return self.store.load(job_id)

    def prune(self) -> None:
        r = self.retention
        removed = self.store.prune(r.keep_s, r.keep_jobs, r.stale_upload_s)
        for job_id in removed:
            self._states.pop(job_id, None)
        if removed:
            log.info("ingest job records pruned", extra={"count": len(removed)})
            self._publish(0)

    async def _work(self) -> None:
        backoff = 0.0
        while True:
            # the worker outlives any one job's trouble (a full disk while saving a state, a
            # record pruned by another worker, Redis out of reach): it logs it and goes on
            claim = None
            try:
                if self.paused():  # the embedder refuses (app/reindex/follow.py): others take jobs
                    await asyncio.sleep(1.0)
                    continue
                claim = await self.queue.next(self.retention.every_s)
                backoff = 0.0
                if claim is not None:
                    await self._take(claim)
                if claim is not None or time.monotonic() >= self._next_prune:
                    self._next_prune = time.monotonic() + self.retention.every_s
                    self.prune()  # idle: records age out even when no job comes
            except QueueUnavailable as exc:
                backoff = min(10.0, backoff * 2 or 0.5)
                log.warning("job queue unreachable", extra={"error": str(exc), "retry_s": backoff})
                await asyncio.sleep(backoff)
            except Exception:
                log.exception("ingest worker: error outside a job", extra={"job_id": claim and claim.job_id})

    async def _take(self, claim: Claim) -> None:
        job_id = claim.job_id
        async with claim.hold() as mine:
            if not mine:
                return
            job = self.store.load(job_id)  # read under the lock
            if job is None and JOB_ID.match(job_id) and (self.store.root / job_id).is_dir():
                return  # there, but unreadable for now (a network volume): taken again later
            if job is None or job.state in FINISHED:
                await claim.done()
                return
            self._hold, self.current = claim, job_id
            try:
                if self.queue.shared and job.state == "running" and not self._recover(job):
                    await claim.done()  # its worker died (the lease ran out): resumed, or failed
                    return
                await claim.guard(self._run(job))
            except asyncio.CancelledError:
                raise  # shutting down: stays running on disk, resumed at next start
            except JobLost as exc:  # another worker may hold the job now: leave it all to it
                log.warning("job given up", extra={"job_id": job_id, "error": str(exc)})
                return
            except Exception as exc:  # anything else ends the job, with its reason
                log.exception("job failed", extra={"job_id": job_id, "kind": job.kind})
                reason = f"{type(exc).__name__}: {exc}"[:400]
                if job.kind == "ingest":
                    reason += f" (every line up to {job.committed_line} is written)"
                try:
                    self._finish(job, "failed", reason)
                except JobLost:
                    return
            finally:
                self._hold, self.current = None, None
            await claim.done()

    def save(self, job: Job) -> None:
        """Save a job's state, if this worker still holds the job it runs (Claim.check)."""
        if self._hold is not None and self._hold.job_id == job.job_id:
            self._hold.check()
        self.store.save(job)

    async def _run(self, job: Job) -> None:
        if self._cancelled(job):  # cancelled while it was being taken
            self._finish(job, "cancelled", "cancelled before it started")
            return
        job.state = "running"
        job.started_at = job.started_at or time.time()
        self.save(job)
        self._notify(job, 0)
        if job.kind != "ingest":
            run = self.kinds.get(job.kind)
            if run is None:  # e.g. queued before a restart on another backend
                raise RuntimeError(f"this gateway runs no {job.kind} jobs")
            await run(job)
            self._finish(job, "succeeded", None)
            return
        path = self.store.input_path(job.job_id)
        if not path.is_file():
            self._finish(job, "failed", "the upload is gone from the jobs directory; upload the file again")
            return
        parse = self._parser_for(job.tenant)
        batch: list[Document] = []
        last, end = job.committed_line, job.bytes_done
        for number, end, line in read_lines(path, job.committed_line, job.bytes_done):
            last = number
            if line.strip():
                try:
                    batch.append(parse(line))
                except ValueError as exc:
                    job.failed_count += 1
                    if len(job.failed) < MAX_REPORTED_FAILURES:
                        bad = {"line": number, "error": str(exc)[:300]}
                        if (doc_id := getattr(exc, "doc_id", None)) is not None:
                            bad["id"] = doc_id
                        job.failed.append(bad)
            if len(batch) >= self.batch_docs:
                await self._commit(job, batch, last, end)
                batch = []
                if self._cancelled(job):
                    await self._end(job)
                    self._finish(job, "cancelled", f"cancelled after line {last}; earlier lines stay written")
                    return
            await asyncio.sleep(0)  # a huge file of bad lines still lets requests in
        await self._commit(job, batch, last, end)
        await self._end(job)
        self._finish(job, "succeeded", None)

    def _cancelled(self, job: Job) -> bool:
        return (self.store.root / job.job_id / CANCEL).exists()

    async def _end(self, job: Job) -> None:
        if self._after is not None and job.upserted:
            await self._after(job)

    async def _commit(self, job: Job, batch: list[Document], last_line: int, end: int) -> None:
        if batch:
            if self._hold is not None:  # (a batch in flight when it ran out: same ids again)
                self._hold.check()
            stats = await self._ingest(batch)
            job.documents += len(batch)
            job.chunks += stats.chunks
            job.upserted += stats.upserted
            job.skipped_unchanged += stats.skipped_unchanged
        job.lines = last_line
        job.committed_line = last_line
        job.bytes_done = end
        self.save(job)
        self._notify(job, len(batch))

    def _finish(self, job: Job, state: JobState, error: str | None) -> None:
        job.state = state
        job.error = error
        job.finished_at = time.time()
        self.save(job)
        self.store.drop_input(job.job_id)  # the record is what is kept (app/job_store.py)
        self._notify(job, 0)

    def _notify(self, job: Job, documents: int) -> None:
        self._states[job.job_id] = job.state
        self._publish(documents)

    def _publish(self, documents: int) -> None:
        if self._on_change is not None:
            by_state: dict[str, int] = dict.fromkeys(STATES, 0)
            for state in self._states.values():
                by_state[state] += 1
            self._on_change(by_state, documents)
