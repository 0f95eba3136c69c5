"""Request-scoped dependencies: the typed app state and the request deadline (the caller and
its tenant policy are app/api/auth.py's).

All `async def`: FastAPI runs a plain `def` dependency on its thread pool, a thread hop per
dependency per request for work that takes microseconds."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import Depends, Header, Request

from app.api.context import context_of
from app.errors import InvalidRequest
from app.lifespan import AppState
from app.resilience import Deadline


async def get_state(request: Request) -> AppState:
    return context_of(request.scope).app


State = Annotated[AppState, Depends(get_state)]


async def get_deadline(
    state: State,
    x_request_timeout: Annotated[
        str | None,
        Header(
            alias="X-Request-Timeout",
            pattern=r"^[0-9]{1,6}(\.[0-9]{1,6})?$",
            # zero is refused below; the schema says so too
            json_schema_extra={"not": {"pattern": r"^[0.]*$"}},
            description="seconds; a client may ask for less than the server's deadline",
        ),
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
