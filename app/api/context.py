"""The typed per-request context: what the edge learns about one request (its id, the caller,
the tenant's policy, the rate-limit headers to send, the pipeline's outcome for the access log
and the span) in one object, stored in `scope["state"]` under CONTEXT_KEY, and nowhere else.

The first middleware (app/api/middleware.py) creates it; dependencies and handlers fill it in;
the middleware reads it on the way out.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from app.answer_cache import Generation
from app.lifespan import AppState
from app.policy import TenantPolicy
from app.security import Principal

CONTEXT_KEY = "rag.request"
UNMATCHED_ROUTE = "unmatched"


class RouteTable:
    """The app's routes, to name the route template of any answer (`/documents/{doc_id}`), also
    when the answer came before routing (overload, body limit, timeout, client gone, an early
    answer) or the method is wrong; else UNMATCHED_ROUTE."""

    def __init__(self, routes: Sequence[BaseRoute] = ()) -> None:
        self.routes = tuple(routes)
        # (method, path) -> the template of the parameterless route it fully matched: bounded by
        # the app's routes, whatever paths clients send
        self._fixed: dict[tuple[str, str], str] = {}

    def template(self, scope: Scope) -> str:
        found = getattr(scope.get("route"), "path", None)
        if found:
            return str(found)
        fixed = (scope["method"], scope["path"])
        known = self._fixed.get(fixed)
        if known is not None:
            return known
        partial = None
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                template = str(getattr(route, "path", UNMATCHED_ROUTE))
                if not getattr(route, "param_convertors", True):
                    self._fixed[fixed] = template
                return template
            if match is Match.PARTIAL and partial is None:
                partial = getattr(route, "path", None)
        return str(partial) if partial else UNMATCHED_ROUTE


@dataclass(slots=True)
class RequestContext:
    app: AppState
    request_id: str
    headers: dict[str, str]  # the request's headers, lower-case names
    routes: RouteTable = field(default_factory=RouteTable)  # to name the route of any answer
    started: float = field(default_factory=time.perf_counter)
    status: int = 0  # of the answer; 0 until it starts
    principal: Principal | None = None  # set once the caller is authenticated (and counted)
    policy: TenantPolicy | None = None  # the caller's tenant policy, resolved with the principal
    rate_limit_headers: dict[str, str] = field(default_factory=dict)  # sent with every answer
    query: str | None = None  # logged only when `logging.log_query` is on
    cache: str | None = None  # set when the pipeline answered
    degraded: list[str] = field(default_factory=list)
    trace_id: str = ""
    # the early answer path's lookup, for the handler: the raw key to store the answer under too,
    # and the generation it read (one generation per request)
    answer_raw_key: str | None = None
    answer_generation: Generation | None = None
    _outcome: tuple[str, int, float] | None = field(default=None, init=False, repr=False)

    def outcome(self, scope: Scope) -> tuple[str, int, float]:
        """(route template, status, seconds), fixed the first time it is asked for, so that the
        span, the metric and the log line of a request agree. A request that got no answer is
        a 500 unless the error handling said otherwise (499: the client left)."""
        if self._outcome is None:
            duration = time.perf_counter() - self.started
            self._outcome = (self.routes.template(scope), self.status or 500, duration)
        return self._outcome


def context_of(scope: Scope) -> RequestContext:
    ctx = scope["state"][CONTEXT_KEY]
    assert isinstance(ctx, RequestContext)
    return ctx


def find_context(scope: Scope) -> RequestContext | None:
    """The context, or None for a request that did not pass the middleware."""
    ctx = scope.get("state", {}).get(CONTEXT_KEY)
    return ctx if isinstance(ctx, RequestContext) else None


class ContextMiddleware:
    """Base of the pure ASGI middleware inside the one that creates the context: it handles HTTP
    requests (only those of `path`, when set) with their context, and passes the rest on."""

    path: str | None = None

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.path is not None and scope["path"] != self.path):
            await self.app(scope, receive, send)
            return
        await self.handle(context_of(scope), scope, receive, send)

    async def handle(self, ctx: RequestContext, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


async def request_context(request: Request) -> RequestContext:
    """The context of the request (a FastAPI dependency)."""
    return context_of(request.scope)
