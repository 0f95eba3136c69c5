"""Snapshots over HTTP (admin keys only; see docs/ARCHITECTURE.md, "Snapshots"):
`POST /admin/snapshots` (201), `GET /admin/snapshots`, `DELETE /admin/snapshots/{name}` and
`POST /admin/snapshots/{name}/restore`, which swaps the serving collection without a restart."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path
from starlette.responses import Response

from app.api.auth import Admin
from app.api.deps import State
from app.api.responses import ADMIN_ERRORS, documented
from app.errors import Conflict
from app.lifespan import AppState
from app.snapshots.service import ROUTE_NAME_PATTERN, SnapshotService

log = logging.getLogger("rag.api.snapshots")
router = APIRouter(tags=["admin"])
Name = Annotated[
    str, Path(pattern=ROUTE_NAME_PATTERN, max_length=255, description="snapshot name, as listed")
]


def _errors(extra: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    return documented(ADMIN_ERRORS, extra)


def _snapshots(state: AppState) -> SnapshotService:
    assert state.snapshots is not None  # set by the lifespan on both backends
    return state.snapshots


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


@router.post("/admin/snapshots", status_code=201, responses=_errors({}))
async def create_snapshot(state: State, admin: Admin) -> Response:
    """Snapshot the serving collection while serving (writes wait for the copy; reads go on)."""
    info = await _snapshots(state).create()
    log.info("snapshot created", extra={"snapshot": info.name, "key_id": admin.key_id})
    return _json(info.as_dict(), 201)


@router.get("/admin/snapshots", responses=_errors({}))
async def list_snapshots(state: State, admin: Admin) -> Response:
    """Every snapshot in the snapshot directory, newest first."""
    return _json({"snapshots": [i.as_dict() for i in await _snapshots(state).snapshots()]})


@router.delete("/admin/snapshots/{name}", responses=_errors({404: "no such snapshot"}))
async def delete_snapshot(name: Name, state: State, admin: Admin) -> Response:
    """Delete one snapshot (its file and checksum)."""
    await _snapshots(state).delete(name)
    log.info("snapshot deleted", extra={"snapshot": name, "key_id": admin.key_id})
    return _json({"deleted": name})


@router.post(
    "/admin/snapshots/{name}/restore",
    responses=_errors(
        {
            404: "no such snapshot",
            409: "a snapshot of another collection or embedder, or ingestion jobs not finished",
            422: "the snapshot is truncated, corrupt or not a snapshot",
        }
    ),
)
async def restore_snapshot(name: Name, state: State, admin: Admin) -> Response:
    """Serve the snapshot's content from now on, without a restart: requests in flight finish on
    the old data; a snapshot that fails its checksum or manifest leaves the serving data as it is."""
    # a job's later batches would land in the restored data and its earlier ones vanish, while
    # it reported them written: a restore waits until no ingestion job is queued or running
    if state.jobs is not None and (unfinished := state.jobs.unfinished()):
        raise Conflict(f"{unfinished} ingestion job(s) not finished: wait for them or cancel them first")
    info = await _snapshots(state).restore(name)
    log.warning("snapshot restored", extra={"snapshot": name, "key_id": admin.key_id})
    return _json({"restored": info.as_dict()})
