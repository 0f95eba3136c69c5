"""`POST /jobs/reindex` (admin keys only; docs/ARCHITECTURE.md, "Reindex"): queues a reindex job,
polled at `GET /jobs/{id}` like an ingestion job. It runs after the jobs queued before it, and
jobs queued after it wait for it."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator
from pydantic.config import JsonDict
from starlette.responses import Response

from app.api.auth import Admin
from app.api.deps import State
from app.api.responses import ADMIN_ERRORS, documented
from app.errors import Overloaded

log = logging.getLogger("rag.api.reindex")
router = APIRouter(tags=["jobs"])


class HnswParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    m: Annotated[int, Field(strict=True, ge=4, le=128)] | None = None
    ef_construct: Annotated[int, Field(strict=True, ge=8, le=2048)] | None = None


# a rollback takes no other field (said in the schema too, so that clients can see it)
_ROLLBACK_ALONE: JsonDict = {
    "if": {"properties": {"rollback": {"const": True}}, "required": ["rollback"]},
    "then": {"properties": {"hnsw": {"type": "null"}, "reembed": {"const": False}}},
}


class ReindexRequest(BaseModel):
    """New HNSW parameters (any subset; the others stay the collection's own), a re-embedding
    from the stored texts, or both (`{}` rebuilds the collection as it is); or a rollback to the
    collection the last reindex replaced, alone."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_ROLLBACK_ALONE)

    hnsw: HnswParams | None = None
    reembed: StrictBool = False
    rollback: StrictBool = False

    @model_validator(mode="after")
    def _rollback_alone(self) -> ReindexRequest:
        if self.rollback and (self.hnsw is not None or self.reembed):
            raise ValueError("a rollback takes no other field")
        return self


@router.post(
    "/jobs/reindex",
    status_code=202,
    responses=documented(
        ADMIN_ERRORS,
        {
            400: "malformed JSON",
            404: "jobs are off",
            409: "nothing to roll back to, or made by no configured embedder; or (Qdrant server) "
            "the collection is not an alias",
            503: "too many unfinished jobs",
        },
    ),
)
async def submit_reindex(body: ReindexRequest, state: State, admin: Admin) -> Response:
    """Queue a reindex job; 202 and the job id. Poll `GET /jobs/{id}`."""
    runner, reindexer = state.jobs, state.reindex
    if runner is None or reindexer is None:
        raise HTTPException(404, "jobs are off")
    if body.rollback:
        await reindexer.check_rollback()  # 409: nothing kept, or kept from an unconfigured embedder
    if runner.unfinished() >= state.settings.jobs.max_unfinished:
        raise Overloaded(f"{state.settings.jobs.max_unfinished} jobs are queued or running; try again later")
    job = runner.store.new("*")
    job.kind = "reindex"
    job.params = body.model_dump(exclude_defaults=True)
    await runner.submit(job)
    log.info("reindex job queued", extra={"job_id": job.job_id, "params": job.params, "key_id": admin.key_id})
    body_out: dict[str, Any] = {"job_id": job.job_id, "state": job.state}
    return Response(
        orjson.dumps(body_out),
        status_code=202,
        media_type="application/json",
        headers={"Location": f"/jobs/{job.job_id}"},
    )
