"""The jobs, snapshot and answer-cache groups of the settings (`RAG_JOBS__*`, `RAG_SNAPSHOTS__*`,
`RAG_ANSWER_CACHE__*`). Part of app/settings.py, which re-exports them; kept apart only for the
size of one module."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field


class JobsSettings(BaseModel):
    dir: Path | None = Field(
        None,
        description="jobs' uploads and state; unset = `jobs` beside RAG_QDRANT__PATH (`$DATA_DIR/jobs`)."
        " With `queue=redis` every replica must mount the same directory",
    )
    max_body_bytes: int = Field(256 * 1024 * 1024, ge=1024, description="upload limit of POST /jobs/ingest")
    idle_timeout_s: float = Field(30.0, gt=0, description="an upload that sends nothing this long is cut off")
    batch_docs: int = Field(64, ge=1, le=4096, description="documents per committed batch of a job")
    max_unfinished: int = Field(
        16,
        ge=1,
        description="jobs queued or running (in this process; with `queue=redis`, in all replicas);"
        " another upload gets 503 overloaded",
    )
    keep_days: float = Field(7.0, gt=0, description="finished jobs' records older than this are pruned (404)")
    keep_jobs: int = Field(1000, ge=1, description="at most this many finished jobs' records are kept")
    queue: Literal["local", "redis"] = Field(
        "local",
        description="`local`: each process runs the jobs it was given. `redis`: a Redis Stream consumer"
        " group that every replica reads; any replica takes a job (Qdrant server backend only)",
    )
    lease_s: float = Field(
        30.0,
        ge=1,
        le=3600,
        description="`queue=redis`: a job whose worker has not renewed its lease this long (it died)"
        " is taken and resumed by another replica. Also the lease of the shared write fence"
        " (RAG_REINDEX__SHARED_FENCE) and of each write registered in it",
    )


class SnapshotSettings(BaseModel):
    dir: Path | None = Field(
        None,
        description="snapshot files; unset = `snapshots` beside RAG_QDRANT__PATH (`$DATA_DIR/snapshots`)",
    )
    keep: int = Field(7, ge=1, description="snapshots kept: after each create, older ones are deleted")


class AnswerCacheSettings(BaseModel):
    enabled: bool = Field(
        True,
        description="cache whole /rag answers (never across a write); false: every request runs the"
        " whole pipeline",
    )
    max_bytes: int = Field(64 * 1024 * 1024, ge=0, description="in-process tier size; 0 = Redis tier only")
    ttl_s: float = Field(300.0, gt=0, description="lifetime of a cached answer")
    local_ttl_s: float = Field(
        5.0, gt=0, description="lifetime while Redis is unreachable (other replicas' writes)"
    )
