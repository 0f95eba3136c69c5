"""Pure ASGI middleware around every HTTP request, one class per job (starlette's own middleware
is the model). From the outside in:

- RequestContextMiddleware: the request id (`X-Request-ID` echoed or generated), the typed
  request context (app/api/context.py), `X-Request-ID` and the rate-limit headers on every answer
  to an authenticated request, and one JSON access-log line per request;
- MetricsMiddleware: the request duration histogram, labelled by route template (also for
  answers given before routing: 503, 413, 408, 499);
- TracingMiddleware: the server span (incoming `traceparent` honoured; probes and /metrics
  untraced);
- ErrorMiddleware: what the pieces inside raise (and whatever a handler let escape) becomes an
  answer through app/api/errors.py, the one place errors become HTTP;
- the body limits (app/api/body.py); the early answer of a repeated /rag body from the answer
  cache, after authentication and the rate limit (app/api/answers.py); the /rag concurrency slot
  and cancelling /rag work when the client leaves (app/api/body.py); a /rag request whose body
  FastAPI would take as it is, straight to the handler's `answer` (app/api/rag.py).

`install` adds them in that order.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util.types import AttributeValue
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.answers import EarlyAnswerMiddleware
from app.api.body import BodyLimitMiddleware, CancelOnDisconnectMiddleware, ConcurrencyLimitMiddleware
from app.api.context import CONTEXT_KEY, UNMATCHED_ROUTE, ContextMiddleware, RequestContext, RouteTable
from app.api.errors import answer_error
from app.api.rag import DirectRagMiddleware
from app.errors import RagError
from app.lifespan import STATE_KEY
from app.observability.logging import REQUEST_ID
from app.observability.tracing import HEADER_GETTER, PROPAGATOR, incoming_trace_id, untraced_context

access_log = logging.getLogger("rag.access")
UNTRACED = frozenset({"/livez", "/readyz", "/metrics"})


def _valid_request_id(v: str) -> bool:
    return 0 < len(v) <= 128 and v.isascii() and v.isprintable()


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute] = ()) -> None:
        self.app = app
        self.routes = RouteTable(routes)  # to name the route of answers given before routing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # a repeated header's first value, as Starlette's `Headers.get` (and so FastAPI) reads it:
        # the edge and the handlers must never see two different Authorization or Content-Type
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in reversed(scope["headers"])}
        if any(k != k.lower() for k, _ in scope["headers"]):
            # ASGI servers should send lower-case names (uvicorn does) and Starlette finds only
            # those: a server that keeps the client's case must not make the handlers miss a
            # header the edge read
            scope["headers"] = [(k.lower(), v) for k, v in scope["headers"]]
        rid = headers.get("x-request-id", "")
        if not _valid_request_id(rid):
            rid = secrets.token_hex(16)  # 128 random bits, as a uuid4's hex
        # a copy per request: servers are meant to copy the lifespan state into each request's
        # scope, but not all do, and the context is per request
        state: dict[str, Any] = dict(scope.get("state") or {})
        ctx = RequestContext(state[STATE_KEY], rid, headers, self.routes)
        state[CONTEXT_KEY] = ctx
        scope["state"] = state

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                ctx.status = message["status"]
                extra_headers = [(b"x-request-id", rid.encode())]
                # an authenticated request was counted by the rate limiter: every answer says how
                # much is left, errors too (a 429 carries its own)
                present = {k.lower() for k, _ in message.get("headers", [])}
                for k, v in ctx.rate_limit_headers.items():
                    if k.lower().encode() not in present:
                        extra_headers.append((k.lower().encode(), v.encode()))
                message["headers"] = [*message.get("headers", []), *extra_headers]
            await send(message)

        rid_token = REQUEST_ID.set(rid)
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            REQUEST_ID.reset(rid_token)
            access_log.info("request", extra=_access_fields(scope, ctx))


def _access_fields(scope: Scope, ctx: RequestContext) -> dict[str, Any]:
    route, status, duration = ctx.outcome(scope)
    extra: dict[str, Any] = {
        "request_id": ctx.request_id,
        "trace_id": ctx.trace_id,
        "method": scope["method"],
        "route": route,
        "status": status,
        "duration_ms": round(duration * 1000, 3),
    }
    if ctx.cache is not None:  # the pipeline answered: "not degraded" is said explicitly
        extra["cache"] = ctx.cache
        extra["degraded"] = ctx.degraded
    if ctx.query is not None:
        extra["query"] = ctx.query
    return extra


class MetricsMiddleware(ContextMiddleware):
    async def handle(self, ctx: RequestContext, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            route, status, duration = ctx.outcome(scope)
            ctx.app.metrics.observe_http(scope["method"], route, status, duration)


class TracingMiddleware(ContextMiddleware):
    async def handle(self, ctx: RequestContext, scope: Scope, receive: Receive, send: Send) -> None:
        span = None
        token = None
        tracer = ctx.app.pipeline.tracer
        if scope["path"] in UNTRACED:
            token = otel_context.attach(untraced_context())
        elif not isinstance(tracer, trace.NoOpTracer):
            parent = PROPAGATOR.extract(ctx.headers, getter=HEADER_GETTER)
            span = tracer.start_span(scope["method"], context=parent, kind=SpanKind.SERVER)
            token = otel_context.attach(trace.set_span_in_context(span))
        try:
            await self.app(scope, receive, send)
        finally:
            if span is not None:
                _finish_span(span, scope, ctx)
                ctx.trace_id = format(span.get_span_context().trace_id, "032x")
            else:
                ctx.trace_id = incoming_trace_id(ctx.headers)
            if token is not None:
                otel_context.detach(token)


def _finish_span(span: trace.Span, scope: Scope, ctx: RequestContext) -> None:
    route, status, _ = ctx.outcome(scope)
    method = scope["method"]
    matched = route != UNMATCHED_ROUTE
    span.update_name(f"{method} {route}" if matched else method)
    # one set_attributes call: one pass through the SDK's checks and lock, not one per attribute
    attrs: dict[str, AttributeValue] = {
        "http.request.method": method,
        "url.path": scope["path"],
        "http.response.status_code": status,
        "rag.request_id": ctx.request_id,
    }
    if matched:
        attrs["http.route"] = route
    if ctx.cache is not None:
        attrs["rag.cache"] = ctx.cache
    if ctx.degraded:
        attrs["rag.degraded"] = ctx.degraded
    span.set_attributes(attrs)
    if status >= 500:
        span.set_status(StatusCode.ERROR)
    span.end()


class ErrorMiddleware(ContextMiddleware):
    async def handle(self, ctx: RequestContext, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            if not isinstance(exc, RagError):
                access_log.exception("unhandled error", extra={"request_id": ctx.request_id})
            await answer_error(exc, ctx, scope, receive, send)


def install(app: FastAPI, routes: Sequence[BaseRoute]) -> None:
    """Add the middleware; the last added runs first."""
    app.add_middleware(DirectRagMiddleware)
    app.add_middleware(CancelOnDisconnectMiddleware)
    app.add_middleware(ConcurrencyLimitMiddleware)
    app.add_middleware(EarlyAnswerMiddleware)
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(ErrorMiddleware)
    app.add_middleware(TracingMiddleware)
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(RequestContextMiddleware, routes=routes)
