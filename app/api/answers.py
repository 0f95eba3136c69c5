"""The answer cache at the edge (see docs/ARCHITECTURE.md, "Answer cache"): the keys of a /rag
answer, and the early answer that serves a repeated request before FastAPI parses its body.

Two keys name one answer:
- the **canonical** key: the request as the handler validated it, every default applied and
  filters in one order (`canonical_request`), so differently written equal requests share it;
- the **raw** key: the body's bytes exactly, with its Content-Type and the tenant's policy. The
  handler stores an answer under both; a later request with the same bytes is then answered by
  `EarlyAnswerMiddleware` without FastAPI, pydantic, the embedder, the store or the reranker.

Both keys include the collection generation, so a write makes every earlier answer unreachable.
The early path runs inside the body limits and the error handling and, like the handler, runs
authentication and the rate limit first (app/api/auth.py `authenticate`, once per request); it
passes a request on to the handler whenever its answer could depend on something the raw key
does not hold: `Cache-Control: no-cache`, `X-Request-Timeout`, or a logged query.
"""

from __future__ import annotations

import time

import orjson
from starlette.types import Receive, Scope, Send

from app.answer_cache import answer_key, join_answer
from app.api.auth import authenticate
from app.api.body import RAG_PATH, replaying
from app.api.context import ContextMiddleware, RequestContext
from app.lifespan import AppState
from app.policy import TenantPolicy
from app.schemas import RagRequest


def identity(state: AppState) -> str:
    """What else an answer depends on: the embedder, the reranker and the collection."""
    reranker = state.reranker.id if state.reranker is not None else "none"
    return f"{state.embedder.id}|{reranker}|{state.settings.qdrant.collection}"


def canonical_request(body: RagRequest, policy: TenantPolicy) -> bytes:
    """Every field an answer depends on, with its default applied and filters in one order."""
    filters = {k: sorted(set(v), key=lambda x: (type(x).__name__, x)) for k, v in body.filters().items()}
    return orjson.dumps(
        {
            "q": body.q,
            "k": body.k,
            "top_n": body.n,
            "filter": filters,
            "rerank": body.rerank,
            "distinct_docs": body.distinct_docs,
            "ef": policy.search_ef(body.ef),
        },
        option=orjson.OPT_SORT_KEYS,
    )


def raw_request(body: bytes, content_type: str, policy: TenantPolicy) -> bytes:
    """The raw key's request: the body's bytes with everything that decides how the handler reads
    them (the media type, and the policy that clamps `k`, picks `ef` and allows filters)."""
    rules = orjson.dumps(
        [policy.max_k, policy.ef, policy.ef_max, sorted(policy.filter_keys.items()), content_type]
    )
    return b"raw\x00" + rules + b"\x00" + body


def early_eligible(headers: dict[str, str], state: AppState) -> bool:
    """Whether the raw body decides the answer (else the handler looks the request up itself)."""
    if "x-request-timeout" in headers or state.settings.logging.log_query:
        return False
    return "no-cache" not in headers.get("cache-control", "").lower()


class EarlyAnswerMiddleware(ContextMiddleware):
    """Answers a POST /rag whose exact body was answered before, from the answer cache; else
    notes the raw key in the context, for the handler to store the answer under it too."""

    path = RAG_PATH

    async def handle(self, ctx: RequestContext, scope: Scope, receive: Receive, send: Send) -> None:
        state = ctx.app
        answers = state.answers
        if answers is None or scope["method"] != "POST" or not early_eligible(ctx.headers, state):
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        message = await receive()  # the whole body, in one message (BodyLimitMiddleware)
        client = scope.get("client")
        await authenticate(ctx, ctx.headers.get("authorization"), client[0] if client else "")
        assert ctx.policy is not None
        generation = await answers.generation()
        raw = raw_request(message.get("body", b""), ctx.headers.get("content-type", ""), ctx.policy)
        key = answer_key(generation.value, identity(state), ctx.policy.tenant, raw)
        rest = await answers.get(key)
        if rest is None:
            ctx.answer_raw_key, ctx.answer_generation = key, generation
            await self.app(scope, replaying(message, receive), send)
            return
        state.metrics.answer_hit.inc()
        content = join_answer(ctx.request_id, rest)
        dur = round((time.perf_counter() - t0) * 1000, 3)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(content)).encode()),
            (b"x-answer-cache", b"hit"),
            (b"server-timing", f'cache;dur={dur};desc="body"'.encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content})
