"""Pure ASGI middleware around every HTTP request.

Owns: the request id (`X-Request-ID` echoed or generated), the body-size limit (413 before the
handler, also for chunked bodies), the body-read timeout (408 and the connection closed), the
in-flight cap on /rag (503 `overloaded` without touching a dependency; a slot is taken only once
the whole body is in, so a client still sending its body holds none), cancelling /rag work when
the client disconnects (499, as for a client leaving while it sends its body), the server span
(incoming `traceparent` honoured; probes and /metrics untraced), the request duration histogram
labelled by route template (also for answers given before routing: 503, 413, 408, 499), the
rate-limit headers on every answer to an authenticated request, and one JSON access-log line per
request.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.auth import RATE_LIMIT_HEADERS
from app.api.errors import error_response
from app.observability.logging import REQUEST_ID
from app.observability.tracing import HEADER_GETTER, PROPAGATOR, incoming_trace_id, untraced_context

access_log = logging.getLogger("rag.access")
UNTRACED = frozenset({"/livez", "/readyz", "/metrics"})
UNMATCHED_ROUTE = "unmatched"
CLIENT_CLOSED = 499  # nginx's convention for "client went away before the answer"
REQUEST_TIMEOUT = 408


def route_template(scope: Scope, routes: Sequence[BaseRoute]) -> str:
    """The route template of the request (`/documents/{doc_id}`), also when the answer came before
    routing (overload, body limit, timeout, client gone) or the method is wrong; else UNMATCHED."""
    found = getattr(scope.get("route"), "path", None)
    if found:
        return str(found)
    partial = None
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return str(getattr(route, "path", UNMATCHED_ROUTE))
        if match is Match.PARTIAL and partial is None:
            partial = getattr(route, "path", None)
    return str(partial) if partial else UNMATCHED_ROUTE


def _valid_request_id(v: str) -> bool:
    return 0 < len(v) <= 128 and v.isascii() and v.isprintable()


class GatewayMiddleware:
    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute] = ()) -> None:
        self.app = app
        self.routes = routes  # the app's routes, to name the route of answers given before routing
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        # a copy per request: servers are meant to copy the lifespan state into each request's
        # scope, but not all do, and the request id, cache outcome and query are per request
        state: dict[str, Any] = dict(scope.get("state") or {})
        scope["state"] = state
        app_state = state["rag"]
        settings = app_state.settings
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        rid = headers.get("x-request-id", "")
        if not _valid_request_id(rid):
            rid = uuid.uuid4().hex
        state["request_id"] = rid
        path: str = scope["path"]
        is_rag = path == "/rag"
        status_box = [0]  # 0 until the response starts

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
                extra_headers = [(b"x-request-id", rid.encode())]
                # an authenticated request was counted by the rate limiter: every answer says how
                # much is left, errors too (a 429 carries its own)
                limits: dict[str, str] = state.get(RATE_LIMIT_HEADERS) or {}
                present = {k.lower() for k, _ in message.get("headers", [])}
                for k, v in limits.items():
                    if k.lower().encode() not in present:
                        extra_headers.append((k.lower().encode(), v.encode()))
                message["headers"] = [*message.get("headers", []), *extra_headers]
            await send(message)

        span = None
        token = None
        rid_token = REQUEST_ID.set(rid)
        tracer = app_state.pipeline.tracer
        if path in UNTRACED:
            token = otel_context.attach(untraced_context())
        elif not isinstance(tracer, trace.NoOpTracer):
            ctx = PROPAGATOR.extract(headers, getter=HEADER_GETTER)
            span = tracer.start_span(scope["method"], context=ctx, kind=SpanKind.SERVER)
            token = otel_context.attach(trace.set_span_in_context(span))

        counted = False
        try:
            limit = settings.server.max_body_bytes
            if path == "/documents":
                limit = settings.server.max_documents_body_bytes  # ingestion has its own limit
            try:
                async with asyncio.timeout(settings.server.body_timeout_s):
                    body_or_error = await self._read_body(headers, receive, limit)
            except TimeoutError:
                # a client that trickles its body holds a connection and memory: cut it off
                resp = error_response(
                    REQUEST_TIMEOUT,
                    "request_timeout",
                    f"the request body did not arrive within {settings.server.body_timeout_s:g}s",
                    rid,
                )
                resp.headers["Connection"] = "close"
                await resp(scope, receive, send_wrapper)
                return
            if isinstance(body_or_error, str):
                await error_response(413, "payload_too_large", body_or_error, rid)(
                    scope, receive, send_wrapper
                )
                return
            if body_or_error is None:
                status_box[0] = CLIENT_CLOSED  # client left while sending the body
                return
            # the slot is taken once the body is in: a client still sending holds none
            if is_rag and self.in_flight >= settings.server.max_in_flight:
                resp = error_response(
                    503,
                    "overloaded",
                    "too many requests in flight; retry shortly",
                    rid,
                    settings.server.retry_after_s,
                )
                await resp(scope, receive, send_wrapper)
                return
            if is_rag:
                self.in_flight += 1
                counted = True
                app_state.metrics.in_flight.inc()
            await self._run(
                scope, body_or_error, receive, send_wrapper, status_box, cancel_on_disconnect=is_rag
            )
        except Exception:
            access_log.exception("unhandled error", extra={"request_id": rid})
            if status_box[0] == 0:
                await error_response(500, "internal_error", "internal error", rid)(
                    scope, receive, send_wrapper
                )
        finally:
            if counted:
                self.in_flight -= 1
                app_state.metrics.in_flight.dec()
            duration = time.perf_counter() - start
            route = route_template(scope, self.routes)
            status = status_box[0] or 500
            app_state.metrics.observe_http(scope["method"], route, status, duration)
            if span is not None:
                self._finish_span(span, scope, state, route, status, rid)
                trace_id = format(span.get_span_context().trace_id, "032x")
            else:
                trace_id = incoming_trace_id(headers)
            if token is not None:
                otel_context.detach(token)
            REQUEST_ID.reset(rid_token)
            extra: dict[str, Any] = {
                "request_id": rid,
                "trace_id": trace_id,
                "method": scope["method"],
                "route": route,
                "status": status,
                "duration_ms": round(duration * 1000, 3),
            }
            for key in ("cache", "degraded", "query"):
                if key in state:
                    extra[key] = state[key]
            if "cache" in extra:  # the pipeline answered: say "not degraded" explicitly
                extra.setdefault("degraded", [])
            access_log.info("request", extra=extra)

    @staticmethod
    def _finish_span(
        span: trace.Span, scope: Scope, state: dict[str, Any], route: str, status: int, rid: str
    ) -> None:
        method = scope["method"]
        matched = route != UNMATCHED_ROUTE
        span.update_name(f"{method} {route}" if matched else method)
        span.set_attribute("http.request.method", method)
        if matched:
            span.set_attribute("http.route", route)
        span.set_attribute("url.path", scope["path"])
        span.set_attribute("http.response.status_code", status)
        span.set_attribute("rag.request_id", rid)
        if "cache" in state:
            span.set_attribute("rag.cache", state["cache"])
        if "degraded" in state:
            span.set_attribute("rag.degraded", state["degraded"])
        if status >= 500:
            span.set_status(StatusCode.ERROR)
        span.end()

    @staticmethod
    async def _read_body(headers: dict[str, str], receive: Receive, limit: int) -> bytes | str | None:
        """The whole body, or a 413 message, or None if the client disconnected."""
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return f"request body is {declared} bytes; the limit is {limit}"
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return f"request body exceeds the limit of {limit} bytes"
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _run(
        self,
        scope: Scope,
        body: bytes,
        receive: Receive,
        send: Send,
        status_box: list[int],
        cancel_on_disconnect: bool,
    ) -> None:
        disconnected = asyncio.Event()
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        if not cancel_on_disconnect:
            await self.app(scope, replay, send)
            return
        answered = False  # the last body chunk went out: a disconnect now cancels nothing

        async def send_tracked(message: Message) -> None:
            nonlocal answered
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                answered = True

        handler = asyncio.ensure_future(self.app(scope, replay, send_tracked))

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    disconnected.set()
                    # servers report "disconnect" once the response is complete, too
                    if not answered:
                        handler.cancel()
                    return

        watcher = asyncio.ensure_future(watch())
        try:
            await handler
        except asyncio.CancelledError:
            if not disconnected.is_set():
                raise  # we were cancelled ourselves (shutdown): pass it on
            if status_box[0] == 0:
                status_box[0] = CLIENT_CLOSED
        finally:
            watcher.cancel()
