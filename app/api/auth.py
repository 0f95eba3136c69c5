"""FastAPI dependencies for who may call: `principal` authenticates the Bearer token and
counts the request against the key's rate limit; `admin_principal` also requires an admin key;
`tenant_max_k` is the tenant's `k` policy.

The tenant comes only from the key (never from the body or a header) whenever auth is on.
Rate-limit headers of an allowed request are left in the request state under
RATE_LIMIT_HEADERS for the handler to send; a refused one raises RateLimited (429).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.errors import Forbidden, RateLimited, Unauthorized
from app.lifespan import STATE_KEY, AppState
from app.schemas import MAX_K
from app.security import Principal
from app.settings import Settings

RATE_LIMIT_HEADERS = "rate_limit_headers"
PRINCIPAL = "principal"  # set once the caller is authenticated (and counted)

# auto_error=False: a missing or non-Bearer header is answered by us, with the JSON error body
bearer = HTTPBearer(
    auto_error=False,
    description="`Authorization: Bearer <key id>.<secret>`; required whenever API keys are configured",
)


async def principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    state: AppState = request.scope["state"][STATE_KEY]
    auth = state.auth
    assert auth is not None
    assert state.limiter is not None
    if auth.enabled and credentials is None and request.headers.get("authorization"):
        raise Unauthorized("malformed Authorization header: expected `Bearer <key>`", error="invalid_request")
    client = request.client.host if request.client is not None else ""
    who = await auth.authenticate(credentials.credentials if credentials is not None else None, client)
    if who.rate_limit is None or who.key_id is None:
        request.scope["state"][PRINCIPAL] = who
        return who
    decision = await state.limiter.hit(who.key_id, who.rate_limit)
    headers = decision.headers()
    if not decision.allowed:
        raise RateLimited(
            f"rate limit of {decision.limit} requests per {state.limiter.window_s:g}s reached; "
            f"retry in {headers['Retry-After']}s",
            headers,
        )
    request.scope["state"][RATE_LIMIT_HEADERS] = headers
    request.scope["state"][PRINCIPAL] = who
    return who


Caller = Annotated[Principal, Depends(principal)]


async def admin_principal(who: Caller) -> Principal:
    if not who.admin:
        raise Forbidden("this API key may not manage documents (admin keys only)")
    return who


Admin = Annotated[Principal, Depends(admin_principal)]


def tenant_max_k(settings: Settings, tenant: str) -> int:
    policy = settings.auth.tenants.get(tenant)
    return min(MAX_K, policy.max_k) if policy is not None and policy.max_k is not None else MAX_K


def rate_limit_headers(request: Request) -> dict[str, str]:
    headers: dict[str, str] = request.scope["state"].get(RATE_LIMIT_HEADERS, {})
    return headers
