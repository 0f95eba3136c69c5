"""POST /rag: validate, run the pipeline, answer with the pre-serialized JSON body and the
X-Cache / Server-Timing headers."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from app.api.auth import rate_limit_headers, tenant_max_k
from app.api.deps import State, get_deadline, get_tenant
from app.errors import InvalidRequest
from app.pipeline import as_dict
from app.resilience import Deadline
from app.schemas import ErrorBody, RagRequest, RagResponse

router = APIRouter()

_ERRORS = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        400: "malformed JSON",
        401: "missing, malformed, wrong or revoked API key (WWW-Authenticate set)",
        413: "body too large",
        422: "invalid input",
        429: "the key's rate limit is used up (Retry-After, X-RateLimit-* set)",
        503: "dependency unavailable or overloaded (Retry-After set)",
        504: "deadline exceeded",
    }.items()
}


@router.post("/rag", response_model=RagResponse, responses=_ERRORS)  # type: ignore[arg-type]
async def rag(
    body: RagRequest,
    request: Request,
    state: State,
    tenant: Annotated[str, Depends(get_tenant)],
    deadline: Annotated[Deadline, Depends(get_deadline)],
) -> Response:
    scope_state = request.scope["state"]
    max_k = tenant_max_k(state.settings, tenant)
    if ("k" in body.model_fields_set and body.k > max_k) or (body.top_n or 0) > max_k:
        raise InvalidRequest(f"k and top_n must be at most {max_k} for this tenant")
    if body.k > max_k:
        body = body.model_copy(update={"k": max_k})  # the default k, cut to the tenant's policy
    if state.settings.logging.log_query:
        scope_state["query"] = body.q
    result = await state.pipeline.run(body, tenant, deadline)
    scope_state["cache"] = result.cache
    if result.degraded:
        scope_state["degraded"] = [d["reason"] for d in result.degraded]
    t = result.timings_ms
    payload = {
        "request_id": scope_state["request_id"],
        "results": [as_dict(r) for r in result.results],
        "reranked": result.reranked,
        "cache": result.cache,
        "degraded": result.degraded,
        "timings_ms": t,
    }
    headers = {
        "X-Cache": result.cache,
        "Server-Timing": f"embed;dur={t['embed']}, search;dur={t['search']}, rerank;dur={t['rerank']}",
    }
    headers.update(rate_limit_headers(request))
    return Response(
        orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY),
        media_type="application/json",
        headers=headers,
    )
