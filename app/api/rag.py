"""POST /rag: validate, check the request against the tenant's policy, answer from the answer
cache or run the pipeline, and answer with the pre-serialized JSON body and the X-Cache,
X-Answer-Cache and Server-Timing headers (the middleware adds X-Request-ID and the rate-limit
headers). Auth and the rate limit run first, always: a cached answer bypasses neither."""

from __future__ import annotations

import json
import time
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Header
from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.answer_cache import answer_key, join_answer, split_answer
from app.api.answers import canonical_request, identity
from app.api.auth import Policy, authenticate
from app.api.body import RAG_PATH, media_type, replaying
from app.api.context import ContextMiddleware, RequestContext, request_context
from app.api.deps import State, get_deadline
from app.api.responses import documented
from app.lifespan import AppState
from app.pipeline import RagResult, as_dict
from app.policy import TenantPolicy
from app.resilience import Deadline
from app.schemas import RagRequest, RagResponse

router = APIRouter()

_ERRORS = documented(
    {
        400: "malformed JSON",
        401: "missing, malformed, wrong or revoked API key (WWW-Authenticate set)",
        413: "body too large",
        422: "invalid input",
        429: "the key's rate limit is used up (Retry-After, X-RateLimit-* set)",
        503: "dependency unavailable or overloaded (Retry-After set)",
        504: "deadline exceeded",
    }
)


@router.post("/rag", response_model=RagResponse, responses=_ERRORS)
async def rag(
    body: RagRequest,
    ctx: Annotated[RequestContext, Depends(request_context)],
    state: State,
    policy: Policy,
    deadline: Annotated[Deadline, Depends(get_deadline)],
    cache_control: Annotated[str | None, Header(alias="Cache-Control", include_in_schema=False)] = None,
) -> Response:
    return await answer(ctx, state, policy, body, deadline, cache_control)


async def answer(
    ctx: RequestContext,
    state: AppState,
    policy: TenantPolicy,
    body: RagRequest,
    deadline: Deadline,
    cache_control: str | None,
) -> Response:
    """The answer to a validated /rag request of an authenticated caller (the route's, and
    DirectRagMiddleware's for the requests it takes)."""
    body = policy.limit_k(body)
    if state.settings.logging.log_query:
        ctx.query = body.q
    policy.check_filters(body)
    answers = state.answers
    if answers is None:
        return _answer(*await _compute(state, body, policy, deadline, ctx), "off")
    if cache_control is not None and "no-cache" in cache_control.lower():
        return _answer(*await _compute(state, body, policy, deadline, ctx), "bypass")
    t0 = time.perf_counter()
    generation = ctx.answer_generation or await answers.generation()
    key = answer_key(generation.value, identity(state), policy.tenant, canonical_request(body, policy))
    raw_key = ctx.answer_raw_key  # the early path's key for this body: the next one is answered there
    rest = await answers.get(key)
    if rest is not None:
        state.metrics.answer_hit.inc()
        if raw_key is not None:
            await answers.put(raw_key, rest, generation)
        dur = round((time.perf_counter() - t0) * 1000, 3)
        headers = {"X-Answer-Cache": "hit", "Server-Timing": f'cache;dur={dur};desc="request"'}
        return Response(join_answer(ctx.request_id, rest), media_type="application/json", headers=headers)
    state.metrics.answer_miss.inc()

    async def compute() -> tuple[bytes | None, tuple[bytes, RagResult]]:
        out = await _compute(state, body, policy, deadline, ctx)
        # a degraded answer is never cached: the next request may get the full one
        return (None if out[1].degraded else split_answer(out[0], ctx.request_id)), out

    shared, own = await answers.single_flight(key, compute)
    if own is None:  # an identical request computed it meanwhile
        assert shared is not None
        if raw_key is not None:
            await answers.put(raw_key, shared, generation)
        return Response(
            join_answer(ctx.request_id, shared),
            media_type="application/json",
            headers={"X-Answer-Cache": "hit"},
        )
    if shared is not None:
        await answers.put([key, raw_key] if raw_key is not None else key, shared, generation)
    return _answer(*own, "miss")


async def _compute(
    state: AppState, body: RagRequest, policy: TenantPolicy, deadline: Deadline, ctx: RequestContext
) -> tuple[bytes, RagResult]:
    # one store and one embedder from the first call to the last, across a restore or a reindex
    async with state.store.lease(), state.embedder.lease():
        result = await state.pipeline.run(body, policy, deadline)
    ctx.cache = result.cache
    ctx.degraded = [d["reason"] for d in result.degraded]
    payload = {
        "request_id": ctx.request_id,  # first: the answer cache stores what follows it
        "results": [as_dict(r) for r in result.results],
        "reranked": result.reranked,
        "cache": result.cache,
        "degraded": result.degraded,
        "timings_ms": result.timings_ms,
    }
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), result


def _answer(content: bytes, result: RagResult, answer_cache: str) -> Response:
    t = result.timings_ms
    headers = {
        "X-Cache": result.cache,
        "X-Answer-Cache": answer_cache,
        "Server-Timing": f"embed;dur={t['embed']}, search;dur={t['search']}, rerank;dur={t['rerank']}",
    }
    return Response(content, media_type="application/json", headers=headers)


def plain_request(body: bytes, content_type: str | None) -> RagRequest | None:
    """The request the route would validate from this body, when FastAPI would take the body as
    it is: `Content-Type: application/json` (parameters allowed), a JSON object (read as
    Starlette's `Request.json()` reads it) that validates as a RagRequest. Else None: the
    route reads the body, and its errors are FastAPI's and app/api/errors.py's."""
    if media_type(content_type) != "application/json":
        return None
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    try:
        return RagRequest.model_validate(value)
    except ValidationError:
        return None


class DirectRagMiddleware(ContextMiddleware):
    """POST /rag straight to `answer`, without FastAPI's routing and dependency solving (a fifth
    of the event loop's CPU on a request that misses every cache): for a request whose body
    the route would take as it is (`plain_request`) and whose deadline is the server's (no
    X-Request-Timeout). It authenticates and counts the caller before it reads the body, as the
    route does (unless the early answer path did); a request it leaves to the route is not
    authenticated or counted again there. Every other request goes on to the route. Installed
    innermost, so the body limits, the in-flight cap and cancellation on disconnect hold as they
    do for the route; a domain error it raises is answered by ErrorMiddleware as the route's
    exception handler would."""

    path = RAG_PATH

    async def handle(self, ctx: RequestContext, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST" or "x-request-timeout" in ctx.headers:
            await self.app(scope, receive, send)
            return
        if ctx.principal is None:  # first, as the route does: no body work for a refused caller
            client = scope.get("client")
            await authenticate(ctx, ctx.headers.get("authorization"), client[0] if client else "")
        message = await receive()  # the whole body, in one message (BodyLimitMiddleware)
        body = plain_request(message.get("body", b""), ctx.headers.get("content-type"))
        if body is None:  # the route answers it, with the caller already authenticated and counted
            await self.app(scope, replaying(message, receive), send)
            return
        assert ctx.policy is not None
        state = ctx.app
        deadline = Deadline(state.settings.server.deadline_s)
        response = await answer(ctx, state, ctx.policy, body, deadline, ctx.headers.get("cache-control"))
        await response(scope, receive, send)
