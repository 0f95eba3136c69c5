"""Ingestion jobs over HTTP (admin keys only; see docs/ARCHITECTURE.md, "Ingestion jobs"):
`POST /jobs/ingest?tenant=T` streams a JSON Lines body to disk (never held in memory) and answers
202 with the job's id; `GET /jobs/{id}`, `GET /jobs` and `DELETE /jobs/{id}` (cancel) follow it.

Each line is validated as one `POST /documents` document (app/document_in.py, the same rules);
a bad line is reported with its number and the job goes on.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, HTTPException, Path, Query, Request
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from app.api.auth import Admin
from app.api.body import media_type
from app.api.deps import State
from app.api.responses import ADMIN_ERRORS, documented
from app.errors import Overloaded, PayloadTooLarge
from app.jobs import JobRunner
from app.settings import TENANT_PATTERN

router = APIRouter(tags=["jobs"])


def _errors(extra: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    return documented(ADMIN_ERRORS, extra)


_UPLOAD = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-ndjson": {
                "schema": {
                    "type": "array",
                    "description": "JSON Lines: one document per line, checked line by line as the job runs",
                    "items": {"type": "object"},
                }
            }
        },
    }
}
log = logging.getLogger("rag.jobs")
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/jsonl", "application/jsonlines"})
LIST_LIMIT = 100


def _runner(state: Any) -> JobRunner:
    runner: JobRunner | None = state.jobs
    if runner is None:
        raise HTTPException(404, "ingestion jobs are off")
    return runner


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # the middleware adds X-Request-ID and the rate-limit headers
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


@router.post(
    "/jobs/ingest",
    status_code=202,
    openapi_extra=_UPLOAD,
    responses=_errors(
        {
            404: "jobs are off",
            408: "the upload stalled",
            413: "body too large",
            415: "not JSON Lines",
            503: "too many unfinished jobs",
        }
    ),
)
async def submit_ingest(
    request: Request,
    tenant: Annotated[str, Query(pattern=TENANT_PATTERN, description="tenant the documents belong to")],
    state: State,
    admin: Admin,
) -> Response:
    """Upload JSON Lines (`{"id", "text", ...payload}` per line) for `tenant`; 202 and the job id."""
    runner = _runner(state)
    if media_type(request.headers.get("content-type")) not in NDJSON_TYPES:
        raise HTTPException(415, "send the documents as application/x-ndjson (one JSON object per line)")
    if runner.unfinished() >= state.settings.jobs.max_unfinished:
        # each waiting job holds its upload on the data volume: bound them before taking another
        raise Overloaded(
            f"{state.settings.jobs.max_unfinished} jobs are queued or running; try again when one ends"
        )
    limit = state.settings.jobs.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is {declared} bytes; the limit is {limit}")
    job = runner.store.new(tenant)
    size = 0
    try:
        with runner.store.input_path(job.job_id).open("wb") as f:
            stream = request.stream().__aiter__()
            while True:
                async with asyncio.timeout(state.settings.jobs.idle_timeout_s):
                    try:
                        chunk = await anext(stream)
                    except StopAsyncIteration:
                        break
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
                f.write(chunk)
    except TimeoutError:
        runner.store.discard(job.job_id)
        raise HTTPException(408, "the upload stalled; send it again") from None
    except (PayloadTooLarge, ClientDisconnect):
        runner.store.discard(job.job_id)
        raise
    job.bytes = size
    await runner.submit(job)
    log.info(
        "ingest job queued",
        extra={"job_id": job.job_id, "tenant": tenant, "bytes": size, "key_id": admin.key_id},
    )
    return _json(
        {"job_id": job.job_id, "state": job.state},
        status=202,
        headers={"Location": f"/jobs/{job.job_id}"},
    )


JobId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="job id")]


@router.get("/jobs/{job_id}", responses=_errors({404: "no such job"}))
async def get_job(job_id: JobId, request: Request, state: State, admin: Admin) -> Response:
    """One job's state, counts and progress; 404 once its record is pruned."""
    job = _runner(state).store.load(job_id)
    if job is None:
        raise HTTPException(404, "no such job")
    return _json(job.public())


@router.get("/jobs", responses=_errors({404: "jobs are off"}))
async def list_jobs(request: Request, state: State, admin: Admin) -> Response:
    """The most recent jobs, newest first."""
    jobs = _runner(state).store.all()[:LIST_LIMIT]
    return _json({"jobs": [j.public() for j in jobs]})


@router.delete("/jobs/{job_id}", responses=_errors({404: "no such job"}))
async def cancel_job(job_id: JobId, request: Request, state: State, admin: Admin) -> Response:
    """Cancel a job: a queued one at once, a running one after its current batch (what it wrote
    stays, and its state says so); a finished job is left as it is."""
    runner = _runner(state)
    job = await runner.cancel(job_id)
    if job is None:
        raise HTTPException(404, "no such job")
    log.info("ingest job cancel asked", extra={"job_id": job_id, "key_id": admin.key_id})
    return _json(job.public())
