"""FastAPI dependencies for who may call: `principal` authenticates the Bearer token, resolves
the caller's tenant policy (app/policy.py) and counts the request against the key's rate limit;
`admin_principal` also requires an admin key.

The tenant comes only from the key (never from the body or a header) whenever auth is on.
The principal, the policy and the rate-limit headers of an allowed request go into the request
context (app/api/context.py); the middleware sends those headers with whatever answer follows.
A refused request raises RateLimited (429), which carries its own.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from app.api.context import RequestContext, context_of
from app.errors import Forbidden, RateLimited, Unauthorized
from app.policy import TenantPolicy
from app.security import Principal

# auto_error=False: a missing or non-Bearer header is answered by us, with the JSON error body
bearer = HTTPBearer(
    auto_error=False,
    description="`Authorization: Bearer <key id>.<secret>`; required whenever API keys are configured",
)


async def principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    ctx = context_of(request.scope)
    if ctx.principal is None:  # not yet authenticated (and counted) by the early answer path
        client = request.client.host if request.client is not None else ""
        await authenticate(ctx, request.headers.get("authorization"), client)
    assert ctx.principal is not None
    return ctx.principal


async def authenticate(ctx: RequestContext, authorization: str | None, client: str) -> None:
    """Authenticate the caller from its Authorization header, resolve its tenant policy and count
    the request against the key's rate limit, once per request: the principal, the policy and
    the rate-limit headers go into the context. Raises Unauthorized or RateLimited."""
    state = ctx.app
    auth = state.auth
    assert auth is not None
    assert state.limiter is not None
    # what HTTPBearer(auto_error=False) accepts: `Bearer <token>`, the scheme in any case
    scheme, token = get_authorization_scheme_param(authorization)
    credentials = token if scheme.lower() == "bearer" and token else None
    if auth.enabled and credentials is None and authorization:
        raise Unauthorized("malformed Authorization header: expected `Bearer <key>`", error="invalid_request")
    who = await auth.authenticate(credentials, client)
    policy = TenantPolicy.for_principal(state.settings, who)
    if who.key_id is not None and policy.rate_limit is not None:
        decision = await state.limiter.hit(who.key_id, policy.rate_limit)
        headers = decision.headers()
        if not decision.allowed:
            raise RateLimited(
                f"rate limit of {decision.limit} requests per {state.limiter.window_s:g}s reached; "
                f"retry in {headers['Retry-After']}s",
                headers,
            )
        ctx.rate_limit_headers = headers
    ctx.principal, ctx.policy = who, policy


Caller = Annotated[Principal, Depends(principal)]


async def admin_principal(who: Caller) -> Principal:
    if not who.admin:
        raise Forbidden("this API key may not manage documents (admin keys only)")
    return who


Admin = Annotated[Principal, Depends(admin_principal)]


async def caller_policy(request: Request, who: Caller) -> TenantPolicy:
    """The authenticated caller's tenant policy (resolving it authenticates and counts)."""
    policy = context_of(request.scope).policy
    assert policy is not None
    return policy


Policy = Annotated[TenantPolicy, Depends(caller_policy)]
