"""Ingestion jobs on disk: one directory a job under the jobs directory, `input.ndjson` (the
upload) and `state.json` (the record, replaced atomically: write, fsync, rename), and their
retention (see docs/ARCHITECTURE.md, "Ingestion jobs").

An upload lives only as long as its job is unfinished: it is removed as soon as the job ends,
whatever the end (succeeded, failed or cancelled). What a failure needs for its audit stays in the
record: every bad line's number, document id and error (the first 100, and a count), and for a
failed job the reason and the last line written. A failed job is run again by uploading the same
file; unchanged documents are skipped. Records of finished jobs are kept for `keep_days` and at
most `keep_jobs` of them (the newest); older ones are pruned, and their ids answer 404.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
STATES: tuple[JobState, ...] = ("queued", "running", "succeeded", "failed", "cancelled")
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
INPUT, STATE = "input.ndjson", "state.json"


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
    bytes: int = 0  # size of the upload
    bytes_done: int = 0  # every byte up to here is done and counted (where a resumed job starts)
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None  # why the job failed or was cancelled
    committed_line: int = 0  # every line up to here is done and counted
    resumed: int = 0  # times it was resumed after a restart
    params: dict[str, Any] = field(default_factory=dict)  # what a job of another kind was asked
    result: dict[str, Any] = field(default_factory=dict)  # and what it did (app/reindex)

    def public(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("committed_line")
        if self.state == "succeeded":
            out["progress"] = 100.0
        elif self.kind != "ingest":
            done, total = self.result.get("points_done", 0), self.result.get("points", 0)
            out["progress"] = round(100.0 * done / total, 1) if total else 0.0
        else:
            out["progress"] = round(100.0 * self.bytes_done / self.bytes, 1) if self.bytes else 0.0
        return out


@dataclass(frozen=True, slots=True)
class Retention:
    keep_s: float = 7 * 86400.0  # records of finished jobs, by age
    keep_jobs: int = 1000  # and by count, the newest
    stale_upload_s: float = 300.0  # an upload no process writes to any more
    every_s: float = 3600.0  # how often an idle worker prunes


class JobStore:
    """The jobs under `root`; a job id from a client never becomes a path unless it is one."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def new(self, tenant: str) -> Job:
        job = Job(job_id=uuid.uuid4().hex, tenant=tenant)
        (self.root / job.job_id).mkdir()
        return job

    def input_path(self, job_id: str) -> Path:
        return self.root / job_id / INPUT

    def save(self, job: Job) -> None:
        path = self.root / job.job_id / STATE
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as f:
            json.dump(asdict(job), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def load(self, job_id: str) -> Job | None:
        if not JOB_ID.match(job_id):
            return None  # never a path from the client
        path = self.root / job_id / STATE
        try:
            return Job(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def all(self) -> list[Job]:
        """Every job, newest first."""
        jobs = [j for d in self.root.iterdir() if (j := self.load(d.name)) is not None]
        return sorted(jobs, key=lambda j: j.created_at, reverse=True)

    def drop_input(self, job_id: str) -> None:
        """The upload of a finished job: its record says all that is kept of it."""
        if JOB_ID.match(job_id):
            with contextlib.suppress(FileNotFoundError):
                self.input_path(job_id).unlink()

    def discard(self, job_id: str) -> None:
        """Forget a job entirely: an upload that never completed, or a pruned record."""
        if JOB_ID.match(job_id):
            shutil.rmtree(self.root / job_id, ignore_errors=True)

    def prune(
        self, keep_s: float, keep_jobs: int, stale_upload_s: float, now: float | None = None
    ) -> list[str]:
        """Remove the records of finished jobs older than `keep_s` or past the newest `keep_jobs`,
        the uploads finished jobs left behind (a process that died between the two writes), and
        uploads that never became a job (the process receiving them died) once `stale_upload_s`
        passed without a write. Returns the ids removed."""
        now = time.time() if now is None else now
        removed: list[str] = []
        finished: list[Job] = []
        for d in self.root.iterdir():
            if not JOB_ID.match(d.name):
                continue
            job = self.load(d.name)
            if job is None:
                if (d / STATE).exists():
                    continue  # unreadable now (being replaced): never guess
                if now - _last_write(d) > stale_upload_s:
                    self.discard(d.name)
                    removed.append(d.name)
            elif job.state in FINISHED:
                finished.append(job)
                self.drop_input(job.job_id)
        finished.sort(key=lambda j: j.finished_at or j.created_at, reverse=True)
        for rank, job in enumerate(finished):
            if rank >= keep_jobs or now - (job.finished_at or job.created_at) > keep_s:
                self.discard(job.job_id)
                removed.append(job.job_id)
        return removed


def _last_write(d: Path) -> float:
    times = [d.stat().st_mtime]
    with contextlib.suppress(FileNotFoundError):
        times.append((d / INPUT).stat().st_mtime)
    return max(times)


def read_lines(path: Path, after: int, offset: int) -> Iterator[tuple[int, int, bytes]]:
    """(line number from 1, byte offset of the line's end, line) for every line after line
    `after`, read lazily from byte `offset` (where line `after` ends; 0 = count from the start)."""
    with path.open("rb") as f:
        number, end = 0, 0
        if offset:
            f.seek(offset)
            number, end = after, offset
        for line in f:
            number += 1
            end += len(line)
            if number > after:
                yield number, end, line
