"""The error answers each route declares in OpenAPI (app/api/errors.py makes the answers)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.schemas import ErrorBody

ADMIN_ERRORS = {
    401: "missing, malformed, wrong or revoked API key",
    403: "the key is not an admin key",
    422: "invalid input",
    429: "the key's rate limit is used up (Retry-After, X-RateLimit-* set)",
}


def documented(*groups: Mapping[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for a route's error answers (later groups win): each status with the
    error body."""
    merged: dict[int, str] = {}
    for group in groups:
        merged.update(group)
    return {code: {"model": ErrorBody, "description": text} for code, text in merged.items()}
