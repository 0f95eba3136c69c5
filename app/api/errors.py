"""The one place errors become HTTP: the table below, the JSON error body, the FastAPI
exception handlers, and `answer_error` for the middleware, which runs outside those handlers and
raises domain errors like everything else.

Client-visible messages are the gateway's own, stable text: a dependency's or a library's
error text (engine errors, addresses, pydantic's internal type names) goes to the log line of
the request (same request id as the body), never to the client. Any text that echoes client
input (a filter key, say) is escaped first, so an error body can always be encoded.
"""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.api.body import media_type
from app.api.context import RequestContext, find_context
from app.errors import (
    BadHttpRequest,
    CircuitOpen,
    ClientDisconnected,
    Conflict,
    DeadlineExceeded,
    DependencyError,
    Forbidden,
    HeadersTooLarge,
    InputRejected,
    InvalidRequest,
    NotFound,
    NotSupported,
    Overloaded,
    PayloadTooLarge,
    RagError,
    RateLimited,
    RequestTimeout,
    SnapshotInvalid,
    Unauthorized,
)

log = logging.getLogger("rag.errors")

CLIENT_CLOSED = 499
# domain error -> (status, error type); the first matching class wins (subclasses first)
ERROR_TABLE: tuple[tuple[type[RagError], int, str], ...] = (
    (SnapshotInvalid, 422, "snapshot_invalid"),
    (InvalidRequest, 422, "invalid_request"),
    (NotFound, 404, "not_found"),
    (Conflict, 409, "conflict"),
    (NotSupported, 501, "not_supported"),
    (Unauthorized, 401, "unauthorized"),
    (Forbidden, 403, "forbidden"),
    (RateLimited, 429, "rate_limited"),
    (PayloadTooLarge, 413, "payload_too_large"),
    (RequestTimeout, 408, "request_timeout"),
    (HeadersTooLarge, 431, "headers_too_large"),
    (BadHttpRequest, 400, "bad_request"),
    # nginx's convention for "client went away before the answer": logged and counted, never sent
    (ClientDisconnected, CLIENT_CLOSED, "client_closed"),
    (Overloaded, 503, "overloaded"),
    (DeadlineExceeded, 504, "deadline_exceeded"),
    # a dependency could not take a value the caller sent: the caller's fault, not an outage
    (InputRejected, 422, "invalid_request"),
    (DependencyError, 503, "upstream_unavailable"),
)
RETRY_AFTER_S = 1
HTTP_TYPES = {
    400: "malformed_json",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}
MALFORMED_JSON = "request body is not valid JSON"
INPUT_REJECTED = "a value of the request cannot be processed"
# what a client is told about a failed dependency, by reason; the dependency's own text is logged
DEPENDENCY_MESSAGES = {
    "unavailable": "unavailable",
    "timeout": "did not answer in time",
    "bad_response": "failed",
    "rejected": "refused the request",
}
# pydantic names the members of a union in the error location (`function-before[whole(), ...]`,
# `list[str]`, `constrained-int`): implementation detail, dropped from the client's message
_SCHEMA_TAGS = frozenset(
    {"str", "int", "bool", "float", "list", "dict", "none", "constrained-int", "constrained-str", "nullable"}
)
_MSG_PREFIXES = ("Value error, ", "Assertion failed, ")
_MAX_ECHO_CHARS = 120


def printable(text: str, limit: int = _MAX_ECHO_CHARS) -> str:
    """`text` safe to echo in an error body or a log: lone surrogates (which no UTF-8 encoder
    takes) and control characters escaped, and cut to `limit` characters."""
    if len(text) > limit:
        text = text[:limit] + "…"
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def error_body(type_: str, message: str, request_id: str) -> bytes:
    """The JSON body of every error answer."""
    message = printable(message, limit=1000)
    return orjson.dumps({"error": {"type": type_, "message": message, "request_id": request_id}})


def error_response(
    status: int, type_: str, message: str, request_id: str, retry_after: int | None = None
) -> Response:
    body = error_body(type_, message, request_id)
    headers = {}  # X-Request-ID is added by the middleware to every response
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def classify(exc: RagError) -> tuple[int, str]:
    for cls, status, type_ in ERROR_TABLE:
        if isinstance(exc, cls):
            return status, type_
    return 500, "internal_error"


def protocol_error(exc: RagError, request_id: str) -> tuple[int, bytes]:
    """Status and body for an answer the HTTP protocol layer writes itself, before any request
    reaches the app (app/api/http_guard.py)."""
    status, type_ = classify(exc)
    return status, error_body(type_, exc.message, request_id)


def request_id_of(request: Request) -> str:
    ctx = find_context(request.scope)
    return ctx.request_id if ctx is not None else ""


def render(exc: RagError, ctx: RequestContext | None) -> Response:
    """The answer to a domain error."""
    status, type_ = classify(exc)
    message = exc.message
    if isinstance(exc, DependencyError):
        # the detail (engine or library text) is logged under the request id, never sent
        log.warning(
            "dependency failed" if status >= 500 else "dependency refused a request value",
            extra={"dependency": exc.dependency, "reason": exc.reason, "detail": exc.message},
        )
        if isinstance(exc, InputRejected):
            message = INPUT_REJECTED
        elif not isinstance(exc, CircuitOpen):  # the breaker's message is the gateway's own
            message = f"{exc.dependency}: {DEPENDENCY_MESSAGES.get(exc.reason, 'failed')}"
    retry_after = None
    if status == 503:
        retry_after = ctx.app.settings.server.retry_after_s if ctx is not None else RETRY_AFTER_S
    resp = error_response(status, type_, message, ctx.request_id if ctx is not None else "", retry_after)
    # WWW-Authenticate (401), Retry-After and X-RateLimit-* (429), Connection (408) travel with it
    resp.headers.update(getattr(exc, "headers", None) or {})
    return resp


async def rag_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RagError)
    return render(exc, find_context(request.scope))


async def answer_error(
    exc: Exception, ctx: RequestContext, scope: Scope, receive: Receive, send: Send
) -> None:
    """Answer an error raised in the middleware (domain errors, and anything a handler let
    escape: 500), unless an answer has started already. A client that left gets no answer; its
    request is counted as CLIENT_CLOSED."""
    if ctx.status != 0:
        return
    if isinstance(exc, ClientDisconnected):
        ctx.status = CLIENT_CLOSED
        return
    if isinstance(exc, RagError):
        resp = render(exc, ctx)
    else:
        resp = error_response(500, "internal_error", "internal error", ctx.request_id)
    await resp(scope, receive, send)


# routes whose callers must authenticate: a body FastAPI cannot parse is refused before its
# dependencies run, so these authenticate the caller first (below)
AUTHENTICATED_ROUTES = frozenset({"/rag", "/documents", "/documents/{doc_id}"})


async def _authenticate_first(request: Request) -> Response | None:
    """An error answer to a body that could not be parsed comes before authentication; run it now,
    so that an unauthenticated caller learns nothing about the body (401 first) and an
    authenticated one is counted and gets its X-RateLimit-* headers like any other answer."""
    from app.api.auth import admin_principal, bearer, principal

    route = getattr(request.scope.get("route"), "path", None)
    ctx = find_context(request.scope)
    if route not in AUTHENTICATED_ROUTES or (ctx is not None and ctx.principal is not None):
        return None
    try:
        who = await principal(request, await bearer(request))
        if route.startswith("/documents"):
            await admin_principal(who)
    except RagError as exc:
        return await rag_error_handler(request, exc)
    return None


def _is_json(content_type: str | None) -> bool:
    media = media_type(content_type)
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def validation_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        refused = await _authenticate_first(request)
        if refused is not None:
            return refused
        return error_response(400, "malformed_json", MALFORMED_JSON, request_id_of(request))
    raw = exc.body
    if isinstance(raw, bytes | bytearray) and raw and not _is_json(request.headers.get("content-type")):
        # FastAPI hands a body of another media type over as bytes, and pydantic then says it is
        # "not a valid dictionary"; the honest answer is the media type
        return error_response(
            415,
            "unsupported_media_type",
            "send the body as JSON with `Content-Type: application/json`",
            request_id_of(request),
        )
    by_location: dict[str, list[tuple[str, str]]] = {}
    for e in errors:
        loc = _location(e.get("loc", ()))
        msg = _message(str(e.get("msg", "invalid")))
        by_location.setdefault(loc, []).append((str(e.get("type", "")), msg))
    parts: list[str] = []
    for loc, found in by_location.items():
        # a union says why each member failed; when one member failed on our own rule (a value
        # error), that is the reason worth telling
        ours = [msg for type_, msg in found if type_ == "value_error"]
        for msg in ours or [msg for _, msg in found]:
            part = f"{loc}: {msg}"
            if part not in parts:
                parts.append(part)
    parts = parts[:10]
    return error_response(422, "invalid_request", "; ".join(parts), request_id_of(request))


def _location(loc: tuple[object, ...] | list[object]) -> str:
    names: list[str] = []
    for p in loc:
        if p == "body" and not names:
            continue
        if isinstance(p, str) and (p in _SCHEMA_TAGS or "[" in p or "(" in p):
            continue  # a union member's tag, not a field
        names.append(printable(str(p), limit=64))
    return ".".join(names) or "body"


def _message(msg: str) -> str:
    for prefix in _MSG_PREFIXES:
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    type_ = HTTP_TYPES.get(exc.status_code, "http_error")
    # FastAPI answers 400 when it cannot parse the body (invalid UTF-8, a compressed body, an
    # integer beyond Python's digit limit, nesting beyond the recursion limit); its text says
    # which library failed how, so the client gets the stable message
    message = MALFORMED_JSON if exc.status_code == 400 else str(exc.detail)
    if exc.status_code == 400:
        refused = await _authenticate_first(request)
        if refused is not None:
            return refused
    resp = error_response(exc.status_code, type_, message, request_id_of(request))
    if exc.headers:
        resp.headers.update(exc.headers)
    return resp


def install(app: FastAPI) -> None:
    app.add_exception_handler(RagError, rag_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(HTTPException, http_error_handler)
