"""Ingestion jobs: a JSON Lines file on disk, worked through in committed batches by one worker
per process, with its state in a JSON file beside it (see docs/ARCHITECTURE.md, "Ingestion jobs").

Nothing is lost across restarts: the upload and the state live under the data directory, and the
state is replaced atomically (write, fsync, rename) after every committed batch. A job found
`running` at start-up (the process died, even by SIGKILL) resumes after its last committed line;
re-processing a batch that was written but not committed is harmless, since writes are upserts by
stable point ids and unchanged documents are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from app.ingest import Document, IngestStats

log = logging.getLogger("rag.jobs")
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
STATES: tuple[JobState, ...] = ("queued", "running", "succeeded", "failed", "cancelled")
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
MAX_REPORTED_FAILURES = 100

ParseLine = Callable[[bytes], Document]  # raises ValueError with a message for the client
ParserFor = Callable[[str], ParseLine]  # the line parser of a tenant
IngestBatch = Callable[[list[Document]], Awaitable[IngestStats]]


@dataclass(slots=True)
class Job:
    job_id: str
    tenant: str
    kind: str = "ingest"
    state: JobState = "queued"
    lines: int = 0  # lines read (blank lines included)
    documents: int = 0  # good documents seen
    chunks: int = 0
    upserted: int = 0  # points written
    skipped_unchanged: int = 0  # documents whose content had not changed: not re-embedded
    failed: list[dict[str, Any]] = field(default_factory=list)  # the first 100 bad lines
    failed_count: int = 0
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None  # why the job failed or was cancelled
    committed_line: int = 0  # every line up to here is done and counted
    resumed: int = 0  # times it was resumed after a restart

    def public(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("committed_line")
        return out


class JobStore:
    """One directory a job under `root`: `input.ndjson` and `state.json`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def new(self, tenant: str) -> Job:
        job = Job(job_id=uuid.uuid4().hex, tenant=tenant)
        (self.root / job.job_id).mkdir()
        return job

    def input_path(self, job_id: str) -> Path:
        return self.root / job_id / "input.ndjson"

    def save(self, job: Job) -> None:
        path = self.root / job.job_id / "state.json"
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as f:
            json.dump(asdict(job), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def load(self, job_id: str) -> Job | None:
        if not JOB_ID.match(job_id):
            return None  # never a path from the client
        path = self.root / job_id / "state.json"
        try:
            return Job(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def all(self) -> list[Job]:
        """Every job, newest first."""
        jobs = [j for d in self.root.iterdir() if (j := self.load(d.name)) is not None]
        return sorted(jobs, key=lambda j: j.created_at, reverse=True)

    def discard(self, job_id: str) -> None:
        """Forget a job that never got its upload (the client left mid-body)."""
        if JOB_ID.match(job_id):
            for name in ("input.ndjson", "state.json"):
                with contextlib.suppress(FileNotFoundError):
                    (self.root / job_id / name).unlink()
            with contextlib.suppress(OSError):
                (self.root / job_id).rmdir()


def read_lines(path: Path, after: int) -> Iterator[tuple[int, bytes]]:
    """(line number from 1, line) for every line after `after`, read lazily."""
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            if number > after:
                yield number, line


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
    ) -> None:
        self.store = store
        self._parser_for = parser_for
        self._ingest = ingest_batch
        self.batch_docs = batch_docs
        self._on_change = on_change  # (jobs by state, documents just committed): the metrics
        self._after = after  # run once a job's last batch is in (the index build)
        self._states: dict[str, str] = {}
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._cancel: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self.current: str | None = None

    async def start(self) -> None:
        """Queue every unfinished job (resuming those a dead process left running)."""
        for job in sorted(self.store.all(), key=lambda j: j.created_at):
            self._states[job.job_id] = job.state
            if job.state == "running":
                job.state = "queued"
                job.resumed += 1
                self.store.save(job)
                log.warning(
                    "ingest job resumed after a restart",
                    extra={"job_id": job.job_id, "after_line": job.committed_line},
                )
            if job.state == "queued":
                self._queue.put_nowait(job.job_id)
        self._task = asyncio.create_task(self._work(), name="ingest-jobs")

    async def stop(self) -> None:
        """Stop working; a job in progress stays `running` on disk and resumes at next start."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def submit(self, job: Job) -> None:
        self.store.save(job)
        self._notify(job, 0)
        self._queue.put_nowait(job.job_id)

    def cancel(self, job_id: str) -> Job | None:
        """Ask a job to stop after its current batch; a queued job is cancelled at once."""
        job = self.store.load(job_id)
        if job is None or job.state in FINISHED:
            return job
        self._cancel.add(job_id)
        if job.state == "queued":
            self._finish(job, "cancelled", "cancelled before it started")
        return job if job.state == "cancelled" else self.store.load(job_id)

    async def _work(self) -> None:
        while True:
            job_id = await self._queue.get()
            job = self.store.load(job_id)
            if job is None or job.state in FINISHED:
                continue
            self.current = job_id
            try:
                await self._run(job)
            except asyncio.CancelledError:
                raise  # shutting down: stays running on disk, resumed at next start
            except Exception as exc:  # anything else ends the job, with its reason
                log.exception("ingest job failed", extra={"job_id": job_id})
                self._finish(job, "failed", f"{type(exc).__name__}: {exc}"[:500])
            finally:
                self.current = None
                self._cancel.discard(job_id)

    async def _run(self, job: Job) -> None:
        job.state = "running"
        job.started_at = job.started_at or time.time()
        self.store.save(job)
        self._notify(job, 0)
        parse = self._parser_for(job.tenant)
        batch: list[Document] = []
        last = job.committed_line
        for number, line in read_lines(self.store.input_path(job.job_id), job.committed_line):
            last = number
            if line.strip():
                try:
                    batch.append(parse(line))
                except ValueError as exc:
                    job.failed_count += 1
                    if len(job.failed) < MAX_REPORTED_FAILURES:
                        job.failed.append({"line": number, "error": str(exc)[:300]})
            if len(batch) >= self.batch_docs:
                await self._commit(job, batch, last)
                batch = []
                if job.job_id in self._cancel:
                    await self._end(job)
                    self._finish(job, "cancelled", f"cancelled after line {last}; earlier lines stay written")
                    return
            await asyncio.sleep(0)  # a huge file of bad lines still lets requests in
        await self._commit(job, batch, last)
        await self._end(job)
        self._finish(job, "succeeded", None)

    async def _end(self, job: Job) -> None:
        if self._after is not None and job.upserted:
            await self._after(job)

    async def _commit(self, job: Job, batch: list[Document], last_line: int) -> None:
        if batch:
            stats = await self._ingest(batch)
            job.documents += len(batch)
            job.chunks += stats.chunks
            job.upserted += stats.upserted
            job.skipped_unchanged += stats.skipped_unchanged
        job.lines = last_line
        job.committed_line = last_line
        self.store.save(job)
        self._notify(job, len(batch))

    def _finish(self, job: Job, state: JobState, error: str | None) -> None:
        job.state = state
        job.error = error
        job.finished_at = time.time()
        self.store.save(job)
        self._notify(job, 0)

    def _notify(self, job: Job, documents: int) -> None:
        self._states[job.job_id] = job.state
        if self._on_change is not None:
            by_state: dict[str, int] = dict.fromkeys(STATES, 0)
            for state in self._states.values():
                by_state[state] += 1
            self._on_change(by_state, documents)
