"""The gateway in-process: `create_app(settings)` with its lifespan (driven by asgi-lifespan's
LifespanManager, which also hands the lifespan state to every request as a server does), and an
httpx client that talks to it over ASGI. Queries go through POST /rag exactly as a user's do
(validation, middleware, pipeline, serialisation); only the socket is missing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from asgi_lifespan import LifespanManager

from app.lifespan import AppState
from app.main import create_app
from app.settings import Settings


@asynccontextmanager
async def running_gateway(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, AppState]]:
    app = create_app(settings)
    # no time limit on start-up (a big model loads slowly) nor on shutdown (drains in-flight work)
    async with LifespanManager(app, startup_timeout=None, shutdown_timeout=None) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=120) as client:
            rag: AppState = app.state.rag
            try:
                yield client, rag
            finally:
                await rag.pipeline.drain()
