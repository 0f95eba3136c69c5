"""POST /rag: validate, check the request against the tenant's policy, run the pipeline, answer
with the pre-serialized JSON body and the X-Cache / Server-Timing headers (the middleware adds
X-Request-ID and the rate-limit headers)."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends
from starlette.responses import Response

from app.api.auth import Policy
from app.api.context import RequestContext, request_context
from app.api.deps import State, get_deadline
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
    ctx: Annotated[RequestContext, Depends(request_context)],
    state: State,
    policy: Policy,
    deadline: Annotated[Deadline, Depends(get_deadline)],
) -> Response:
    body = policy.limit_k(body)
    if state.settings.logging.log_query:
        ctx.query = body.q
    policy.check_filters(body)
    result = await state.pipeline.run(body, policy, deadline)
    ctx.cache = result.cache
    ctx.degraded = [d["reason"] for d in result.degraded]
    t = result.timings_ms
    payload = {
        "request_id": ctx.request_id,
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
    return Response(
        orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY),
        media_type="application/json",
        headers=headers,
    )
