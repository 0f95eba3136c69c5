"""Request-scoped dependencies: the typed app state, the tenant and the request deadline."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import Depends, Header, Request

from app.errors import InvalidRequest
from app.lifespan import STATE_KEY, AppState
from app.resilience import Deadline


def get_state(request: Request) -> AppState:
    state: AppState = request.scope["state"][STATE_KEY]
    return state


State = Annotated[AppState, Depends(get_state)]


def get_tenant(state: State) -> str:
    # Until API keys map callers to tenants, every caller is the configured default tenant.
    return state.settings.server.default_tenant


def get_deadline(
    state: State,
    x_request_timeout: Annotated[
        str | None,
        Header(description="seconds; a client may ask for less than the server's deadline"),
    ] = None,
) -> Deadline:
    limit = state.settings.server.deadline_s
    if x_request_timeout is not None:
        try:
            asked = float(x_request_timeout)
        except ValueError:
            asked = math.nan
        if not math.isfinite(asked) or asked <= 0:
            raise InvalidRequest("X-Request-Timeout must be a positive number of seconds")
        limit = min(limit, asked)
    return Deadline(limit)
