"""The one place errors become HTTP: the table below, the JSON error body and the FastAPI
exception handlers. The middleware uses `error_response` for what it answers itself."""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from app.errors import (
    DeadlineExceeded,
    DependencyError,
    Forbidden,
    InvalidRequest,
    Overloaded,
    PayloadTooLarge,
    RagError,
    RateLimited,
    Unauthorized,
)

log = logging.getLogger("rag.errors")

# domain error -> (status, error type); the first matching class wins (subclasses first)
ERROR_TABLE: tuple[tuple[type[RagError], int, str], ...] = (
    (InvalidRequest, 422, "invalid_request"),
    (Unauthorized, 401, "unauthorized"),
    (Forbidden, 403, "forbidden"),
    (RateLimited, 429, "rate_limited"),
    (PayloadTooLarge, 413, "payload_too_large"),
    (Overloaded, 503, "overloaded"),
    (DeadlineExceeded, 504, "deadline_exceeded"),
    (DependencyError, 503, "upstream_unavailable"),
)
RETRY_AFTER_S = 1
HTTP_TYPES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def error_response(
    status: int, type_: str, message: str, request_id: str, retry_after: int | None = None
) -> Response:
    body = orjson.dumps({"error": {"type": type_, "message": message, "request_id": request_id}})
    headers = {}  # X-Request-ID is added by the middleware to every response
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def classify(exc: RagError) -> tuple[int, str]:
    for cls, status, type_ in ERROR_TABLE:
        if isinstance(exc, cls):
            return status, type_
    return 500, "internal_error"


def request_id_of(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


def _retry_after(request: Request) -> int:
    state = request.scope.get("state", {}).get("rag")
    return state.settings.server.retry_after_s if state is not None else RETRY_AFTER_S


async def rag_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RagError)
    status, type_ = classify(exc)
    if isinstance(exc, DependencyError):
        log.warning("dependency failed", extra={"dependency": exc.dependency, "reason": exc.reason})
    retry_after = _retry_after(request) if status == 503 else None
    resp = error_response(status, type_, exc.message, request_id_of(request), retry_after)
    # WWW-Authenticate (401), Retry-After and X-RateLimit-* (429) travel with the error
    resp.headers.update(getattr(exc, "headers", None) or {})
    return resp


async def validation_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(400, "malformed_json", "request body is not valid JSON", request_id_of(request))
    parts = []
    for e in errors[:10]:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    return error_response(422, "invalid_request", "; ".join(parts), request_id_of(request))


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    type_ = HTTP_TYPES.get(exc.status_code, "http_error")
    resp = error_response(exc.status_code, type_, str(exc.detail), request_id_of(request))
    if exc.headers:
        resp.headers.update(exc.headers)
    return resp


def install(app: FastAPI) -> None:
    app.add_exception_handler(RagError, rag_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(HTTPException, http_error_handler)
