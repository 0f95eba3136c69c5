"""Ingestion jobs: a JSON Lines file on disk (app/job_store.py), worked through in committed
batches by one worker per process (see docs/ARCHITECTURE.md, "Ingestion jobs").

Nothing is lost across restarts: the upload and the state live under the data directory, and the
state is replaced atomically after every committed batch. A job found `running` at start-up (the
process died, even by SIGKILL) resumes after its last committed line; re-processing a batch that
was written but not committed is harmless, since writes are upserts by stable point ids and
unchanged documents are skipped. A job being run holds an advisory lock on its directory, so
processes sharing the jobs directory (several workers of one pod) never run one job twice, and a
cancel is a file beside the state, seen by whichever process runs the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from app.ingest import Document, IngestStats
from app.job_store import FINISHED, STATES, Job, JobState, JobStore, read_lines

__all__ = ["FINISHED", "Job", "JobRunner", "JobState", "JobStore", "Retention"]

log = logging.getLogger("rag.jobs")
MAX_REPORTED_FAILURES = 100
CANCEL = "cancel"

ParseLine = Callable[[bytes], Document]  # raises ValueError with a message for the client
ParserFor = Callable[[str], ParseLine]  # the line parser of a tenant
IngestBatch = Callable[[list[Document]], Awaitable[IngestStats]]
RunJob = Callable[[Job], Awaitable[None]]  # a job of another kind (a reindex): raises to fail it


@dataclass(frozen=True, slots=True)
class Retention:
    keep_s: float = 7 * 86400.0  # records of finished jobs, by age
    keep_jobs: int = 1000  # and by count, the newest
    stale_upload_s: float = 300.0  # an upload no process writes to any more
    every_s: float = 3600.0  # how often an idle worker prunes


@contextlib.contextmanager
def job_lock(store: JobStore, job_id: str) -> Iterator[bool]:
    """True while this process holds the job's lock; False if another process does. The kernel
    drops the lock when the holder dies, even by SIGKILL."""
    try:
        fd = os.open(store.root / job_id / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    except FileNotFoundError:
        yield False  # the job is gone (pruned)
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


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
    ) -> None:
        self.store = store
        self._parser_for = parser_for
        self._ingest = ingest_batch
        self.batch_docs = batch_docs
        self._on_change = on_change  # (jobs by state, documents just committed): the metrics
        self._after = after  # run once a job's last batch is in (the index build)
        self.retention = retention or Retention()
        self._states: dict[str, str] = {}
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.current: str | None = None
        self.kinds: dict[str, RunJob] = {}  # kind -> how a job of it is run (ingest: built in)

    async def start(self) -> None:
        """Prune, then queue every unfinished job (resuming those a dead process left running)."""
        self.prune()
        for job in sorted(self.store.all(), key=lambda j: j.created_at):
            self._states[job.job_id] = job.state
            if job.state == "running":
                with job_lock(self.store, job.job_id) as mine:
                    if not mine:
                        continue  # another live process runs it
                    if job.kind != "ingest":  # not resumable: it left the state of before or after
                        self._finish(job, "failed", "the gateway stopped while the job ran; submit it again")
                        log.warning("job failed by a restart", extra={"job_id": job.job_id, "kind": job.kind})
                        continue
                    job.state = "queued"
                    job.resumed += 1
                    self.store.save(job)
                log.warning(
                    "ingest job resumed after a restart",
                    extra={"job_id": job.job_id, "after_line": job.committed_line},
                )
            if job.state == "queued":
                self._queue.put_nowait(job.job_id)
        self._publish(0)
        self._task = asyncio.create_task(self._work(), name="ingest-jobs")

    async def stop(self) -> None:
        """Stop working; a job in progress stays `running` on disk and resumes at next start."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def unfinished(self) -> int:
        """Jobs queued or running here (and running in a process sharing the directory)."""
        return sum(1 for state in self._states.values() if state not in FINISHED)

    def submit(self, job: Job) -> None:
        self.store.save(job)
        self._notify(job, 0)
        self._queue.put_nowait(job.job_id)

    def cancel(self, job_id: str) -> Job | None:
        """Ask a job to stop after its current batch; a queued job is cancelled at once."""
        job = self.store.load(job_id)
        if job is None or job.state in FINISHED:
            return job
        with contextlib.suppress(FileNotFoundError):
            (self.store.root / job_id / CANCEL).touch()
        if job.state == "queued":
            self._finish(job, "cancelled", "cancelled before it started")
        return job if job.state == "cancelled" else self.store.load(job_id)

    def prune(self) -> None:
        r = self.retention
        removed = self.store.prune(r.keep_s, r.keep_jobs, r.stale_upload_s)
        for job_id in removed:
            self._states.pop(job_id, None)
        if removed:
            log.info("ingest job records pruned", extra={"count": len(removed)})
            self._publish(0)

    async def _work(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.retention.every_s):
                    job_id = await self._queue.get()
            except TimeoutError:
                job_id = None  # idle: records age out even when no job comes
            # the worker outlives any one job's trouble (a full disk while saving a state, a
            # record pruned by another worker): it logs it and takes the next job
            try:
                if job_id is not None:
                    await self._take(job_id)
                self.prune()
            except Exception:
                log.exception("ingest worker: error outside a job", extra={"job_id": job_id})

    async def _take(self, job_id: str) -> None:
        with job_lock(self.store, job_id) as mine:
            job = self.store.load(job_id) if mine else None  # read under the lock
            if job is None or job.state in FINISHED:
                return
            self.current = job_id
            try:
                await self._run(job)
            except asyncio.CancelledError:
                raise  # shutting down: stays running on disk, resumed at next start
            except Exception as exc:  # anything else ends the job, with its reason
                log.exception("job failed", extra={"job_id": job_id, "kind": job.kind})
                reason = f"{type(exc).__name__}: {exc}"[:400]
                if job.kind == "ingest":
                    reason += f" (every line up to {job.committed_line} is written)"
                self._finish(job, "failed", reason)
            finally:
                self.current = None

    async def _run(self, job: Job) -> None:
        job.state = "running"
        job.started_at = job.started_at or time.time()
        self.store.save(job)
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
            stats = await self._ingest(batch)
            job.documents += len(batch)
            job.chunks += stats.chunks
            job.upserted += stats.upserted
            job.skipped_unchanged += stats.skipped_unchanged
        job.lines = last_line
        job.committed_line = last_line
        job.bytes_done = end
        self.store.save(job)
        self._notify(job, len(batch))

    def _finish(self, job: Job, state: JobState, error: str | None) -> None:
        job.state = state
        job.error = error
        job.finished_at = time.time()
        self.store.save(job)
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
