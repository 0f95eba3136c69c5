"""Operator views (admin keys only). `GET /admin/collection`: the collection as the engine reports
it, in the shape of Qdrant's `GET /collections/<name>` (points, indexed vectors, segments, the
HNSW config as stored, the payload schema with point counts), never values echoed back from our
settings; plus the gateway's own facts under `gateway`."""

from __future__ import annotations

import orjson
from fastapi import APIRouter
from starlette.responses import Response

from app.api.auth import Admin
from app.api.deps import State
from app.api.responses import ADMIN_ERRORS, documented

router = APIRouter(tags=["admin"])


@router.get(
    "/admin/collection",
    responses=documented(ADMIN_ERRORS, {503: "the vector store is unavailable (Retry-After set)"}),
)
async def collection(state: State, admin: Admin) -> Response:
    """The serving collection: what the engine reports, and what the gateway knows of it."""
    info = await state.store.info()
    answers = state.answers
    gateway = {
        "collection": state.store.collection,
        "backend": "server" if state.settings.qdrant.url else "embedded",
        "embedder": {"id": state.embedder.id, "dim": state.embedder.dim},
        "reranker": state.reranker.id if state.reranker is not None else None,
        "generation": (await answers.generation()).value if answers is not None else None,
        "last_write_at": state.last_write_at,
    }
    body = {"result": {**info, "gateway": gateway}, "status": "ok"}
    return Response(orjson.dumps(body), media_type="application/json")
