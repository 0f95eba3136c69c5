"""Ingestion for tenants (admin keys only): `POST /documents` embeds and upserts a batch of
passages for one tenant through app/ingest.py (the code the bootstrap script uses, so the
payload and the content hashes are the same), `DELETE /documents/{id}?tenant=` removes one.

The embedded Qdrant engine lives in the gateway process, so this is how data gets in while the
gateway serves. Bodies are bounded (RAG_SERVER__MAX_DOCUMENTS_BODY_BYTES -> 413; documents per
request, text length, payload keys and values -> 422).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
)
from starlette.responses import Response

from app.api.auth import Admin
from app.api.deps import State
from app.api.responses import ADMIN_ERRORS, documented
from app.document_in import DOC_ID_PATTERN, MAX_DOCUMENTS, DocumentIn, check_filter_types, to_document
from app.ingest import content_hash, document_point_ids, ingest_documents
from app.search import forget_points
from app.settings import TENANT_PATTERN
from app.types import point_id

router = APIRouter(tags=["documents"])
log = logging.getLogger("rag.documents")


class DocumentsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: StrictStr = Field(pattern=TENANT_PATTERN, description="tenant the passages belong to")
    documents: list[DocumentIn] = Field(min_length=1, max_length=MAX_DOCUMENTS)


class DocumentOut(BaseModel):
    id: str
    point_id: str
    content_hash: str


class DocumentsResponse(BaseModel):
    tenant: str
    upserted: int  # documents
    chunks: int  # points written: a document longer than the model's window is several
    documents: list[DocumentOut]


class DeletedResponse(BaseModel):
    tenant: str
    id: str
    point_id: str


def _errors(extra: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    return documented(
        ADMIN_ERRORS, {503: "the vector store or the embedder is unavailable (Retry-After set)"}, extra
    )


def _json(body: BaseModel) -> Response:
    # the middleware adds X-Request-ID and the rate-limit headers
    return Response(orjson.dumps(body.model_dump()), media_type="application/json")


@router.post(
    "/documents",
    response_model=DocumentsResponse,
    responses=_errors({400: "malformed JSON", 413: "body too large"}),
)
async def upsert_documents(body: DocumentsRequest, state: State, admin: Admin) -> Response:
    """Embed and upsert passages for `tenant` (admin keys only); re-sending an id overwrites it,
    also within one request (the last copy wins)."""
    last = {d.id: d for d in body.documents}
    check_filter_types(last.values(), state.settings.qdrant.filter_keys)
    docs = [to_document(d, body.tenant) for d in last.values()]
    async with state.store.writing():  # held while a snapshot is copied or a restore swaps
        try:
            stats = await ingest_documents(
                state.store,
                state.embedder,
                docs,
                verify_ef=state.settings.qdrant.ef_default,
                chunker=state.chunker,
                skip_unchanged=False,
            )
        finally:  # (also when it failed part-way: some of it may be written)
            await state.wrote()
    log.info(
        "documents upserted",
        extra={"tenant": body.tenant, "count": len(docs), "chunks": stats.chunks, "key_id": admin.key_id},
    )
    out = [
        DocumentOut(id=d.doc_id, point_id=point_id(d.tenant, d.doc_id), content_hash=content_hash(d.text))
        for d in docs
    ]
    return _json(
        DocumentsResponse(tenant=body.tenant, upserted=len(docs), chunks=stats.chunks, documents=out)
    )


@router.delete("/documents/{doc_id}", response_model=DeletedResponse, responses=_errors({}))
async def delete_document(
    doc_id: Annotated[str, Path(pattern=DOC_ID_PATTERN, description="document id")],
    tenant: Annotated[str, Query(pattern=TENANT_PATTERN, description="tenant of the document")],
    state: State,
    admin: Admin,
) -> Response:
    """Delete one document of `tenant` by id, every chunk of it (admin keys only); deleting a
    missing id is a no-op."""
    async with state.store.writing():  # held while a snapshot is copied or a restore swaps
        ids = await document_point_ids(state.store, tenant, doc_id)
        try:
            await state.store.delete(ids)
            await forget_points(state.store, tenant, ids)
        finally:  # (also when it failed part-way)
            await state.wrote()
    log.info("document deleted", extra={"tenant": tenant, "key_id": admin.key_id, "points": len(ids)})
    return _json(DeletedResponse(tenant=tenant, id=doc_id, point_id=ids[0]))
