"""Ingestion for tenants (admin keys only): `POST /documents` embeds and upserts a batch of
passages for one tenant through app/ingest.py (the code the bootstrap script uses, so the
payload and the content hashes are the same), `DELETE /documents/{id}?tenant=` removes one.

The embedded Qdrant engine lives in the gateway process, so this is how data gets in while the
gateway serves. Bodies are bounded (RAG_SERVER__MAX_DOCUMENTS_BODY_BYTES -> 413; documents per
request, text length, payload keys and values -> 422).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)
from starlette.responses import Response

from app.api.auth import Admin
from app.api.deps import State
from app.errors import InvalidRequest
from app.ingest import RESERVED, Document, content_hash, ingest
from app.policy import FILTER_VALUE_TYPES
from app.schemas import NOT_BLANK, ErrorBody, Text, whole
from app.search import forget_points
from app.settings import TENANT_PATTERN
from app.types import point_id

router = APIRouter(tags=["documents"])
log = logging.getLogger("rag.documents")

DOC_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@\-]{0,127}$"
MAX_DOCUMENTS = 256
MAX_TEXT_CHARS = 16384
MAX_FIELDS = 19  # id, text, source and up to 16 payload fields
MAX_VALUE_CHARS = 256
EXTRA_KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
EXTRA_KEY = re.compile(EXTRA_KEY_PATTERN)
JSON_SAFE_INT = 2**53 - 1
# set by ingestion, never by the caller
RESERVED_NAMES: list[JsonValue] = [name for name in sorted(RESERVED) if name != "text"]

PayloadValue = (
    Annotated[Text, Field(max_length=MAX_VALUE_CHARS)]
    | Annotated[StrictInt, Field(ge=-JSON_SAFE_INT, le=JSON_SAFE_INT), BeforeValidator(whole)]
    | StrictBool
)


class DocumentIn(BaseModel):
    """One passage: `id`, `text`, optional `source`, and up to 16 flat payload fields."""

    model_config = ConfigDict(
        extra="allow",
        frozen=True,
        # what the validator below checks, said in the schema too
        json_schema_extra={
            "maxProperties": MAX_FIELDS,
            "propertyNames": {"pattern": EXTRA_KEY_PATTERN, "not": {"enum": RESERVED_NAMES}},
        },
    )
    __pydantic_extra__: dict[str, PayloadValue] = Field(init=False)

    id: StrictStr = Field(pattern=DOC_ID_PATTERN, description="document id; unique within the tenant")
    text: Text = Field(min_length=1, max_length=MAX_TEXT_CHARS, pattern=NOT_BLANK, description="passage text")
    source: Text = Field("", max_length=MAX_VALUE_CHARS, description="where the passage comes from")

    @model_validator(mode="after")
    def _extras(self) -> DocumentIn:
        extra = self.__pydantic_extra__ or {}
        # model_fields_set already holds the extra fields that were set: count each field once
        if len(self.model_fields_set | set(extra)) > MAX_FIELDS:
            raise ValueError(f"at most {MAX_FIELDS} fields per document (id, text, source and payload)")
        for key in extra:
            if key in RESERVED or not EXTRA_KEY.match(key):
                raise ValueError(f"payload field {key[:64]!r} is reserved or not a plain identifier")
        return self


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
    upserted: int
    documents: list[DocumentOut]


class DeletedResponse(BaseModel):
    tenant: str
    id: str
    point_id: str


def _errors(extra: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    base = {
        401: "missing, malformed, wrong or revoked API key",
        403: "the key is not an admin key",
        422: "invalid input",
        429: "the key's rate limit is used up (Retry-After, X-RateLimit-* set)",
        503: "the vector store or the embedder is unavailable (Retry-After set)",
        **extra,
    }
    return {code: {"model": ErrorBody, "description": text} for code, text in base.items()}


def _json(body: BaseModel) -> Response:
    # the middleware adds X-Request-ID and the rate-limit headers
    return Response(orjson.dumps(body.model_dump()), media_type="application/json")


def _check_filter_types(docs: Iterable[DocumentIn], keys: Mapping[str, str]) -> None:
    """A payload field that is a filter key must have the key's type: a `year` stored as "2020"
    under an integer index could never be matched, silently."""
    for d in docs:
        fields = {"source": d.source, **(d.__pydantic_extra__ or {})}
        for key, kind in keys.items():
            if key in fields and type(fields[key]) is not FILTER_VALUE_TYPES[kind]:
                raise InvalidRequest(
                    f"document {d.id!r}: payload field {key!r} is a filter key of type {kind}"
                )


@router.post(
    "/documents",
    response_model=DocumentsResponse,
    responses=_errors({400: "malformed JSON", 413: "body too large"}),
)
async def upsert_documents(body: DocumentsRequest, state: State, admin: Admin) -> Response:
    """Embed and upsert passages for `tenant` (admin keys only); re-sending an id overwrites it,
    also within one request (the last copy wins)."""
    last = {d.id: d for d in body.documents}
    _check_filter_types(last.values(), state.settings.qdrant.filter_keys)
    docs = [
        Document(
            doc_id=d.id,
            text=d.text,
            tenant=body.tenant,
            source=d.source,
            extra=dict(d.__pydantic_extra__ or {}),
        )
        for d in last.values()
    ]
    n = await ingest(state.store, state.embedder, docs, verify_ef=state.settings.qdrant.ef_default)
    log.info("documents upserted", extra={"tenant": body.tenant, "count": n, "key_id": admin.key_id})
    out = [
        DocumentOut(id=d.doc_id, point_id=point_id(d.tenant, d.doc_id), content_hash=content_hash(d.text))
        for d in docs
    ]
    return _json(DocumentsResponse(tenant=body.tenant, upserted=n, documents=out))


@router.delete("/documents/{doc_id}", response_model=DeletedResponse, responses=_errors({}))
async def delete_document(
    doc_id: Annotated[str, Path(pattern=DOC_ID_PATTERN, description="document id")],
    tenant: Annotated[str, Query(pattern=TENANT_PATTERN, description="tenant of the document")],
    state: State,
    admin: Admin,
) -> Response:
    """Delete one document of `tenant` by id (admin keys only); deleting a missing id is a no-op."""
    pid = point_id(tenant, doc_id)
    await state.store.delete([pid])
    await forget_points(state.store, tenant, [pid])
    log.info("document deleted", extra={"tenant": tenant, "key_id": admin.key_id})
    return _json(DeletedResponse(tenant=tenant, id=doc_id, point_id=pid))
