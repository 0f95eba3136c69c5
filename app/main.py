"""The app factory. `create_app(settings)` builds a FastAPI app whose lifespan opens every
client; `app.main:app` (for `uvicorn app.main:app`) is created lazily on first access and then
kept, so importing this module reads no settings and every access gets the same app."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.routing import BaseRoute, Route

from app.api import errors, middleware
from app.api.admin import router as admin_router
from app.api.documents import router as documents_router
from app.api.health import router as health_router
from app.api.jobs import router as jobs_router
from app.api.rag import router as rag_router
from app.api.reindex import router as reindex_router
from app.api.snapshots import router as snapshots_router
from app.lifespan import STATE_KEY, open_state
from app.observability.logging import flush_logs, setup_logging
from app.observability.metrics import Metrics
from app.schemas import document_filter_keys
from app.settings import Settings


def create_app(settings: Settings | None = None, metrics: Metrics | None = None) -> FastAPI:
    settings = settings if settings is not None else Settings()
    metrics = metrics if metrics is not None else Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        try:
            async with open_state(settings, metrics) as state:
                app.state.rag = state  # for tests and scripts holding the app object
                yield {STATE_KEY: state}
        finally:
            flush_logs()  # the access lines of the last requests, before a signal ends us

    docs = settings.server.docs_enabled
    app = FastAPI(
        title="RAG Gateway",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
        # spans, metrics and logs are the gateway's own (app/observability/); FastAPI's native
        # telemetry would add a second server span wherever a global provider is set, and asks
        # for the global providers on every request even when none is
        telemetry={"tracing": False, "metrics": False, "logs": False, "auto_configure": False},
    )
    errors.install(app)
    app.include_router(rag_router)
    app.include_router(health_router)
    app.include_router(documents_router)
    app.include_router(reindex_router)
    app.include_router(jobs_router)
    app.include_router(admin_router)
    app.include_router(snapshots_router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document_filter_keys(FastAPI.openapi(app), settings.qdrant.filter_keys)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
    # FastAPI's own routes (/docs, /openapi.json) and ours, whose templates label every answer
    routes: list[BaseRoute] = [r for r in app.routes if isinstance(r, Route)]
    routes += [
        r for router in (rag_router, health_router, documents_router, jobs_router) for r in router.routes
    ]
    middleware.install(app, routes)
    return app


def create_app_from_env() -> FastAPI:
    """Entry point for `uvicorn --factory`: settings and logging from the environment."""
    settings = Settings()
    setup_logging(settings.logging.level, settings.logging.flush_interval_s)
    return create_app(settings)


@functools.cache
def _shared_app() -> FastAPI:
    return create_app_from_env()


def __getattr__(name: str) -> Any:
    if name == "app":
        return _shared_app()
    raise AttributeError(name)
