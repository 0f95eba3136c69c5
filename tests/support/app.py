"""Settings for a test app, and the app running with its lifespan behind an httpx client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

from app.settings import Settings

Groups = dict[str, dict[str, Any]]


def merge_groups(base: Groups, groups: Groups) -> Groups:
    """`base` with each group in `groups` laid over the same group's fields (a copy)."""
    out = {k: dict(v) for k, v in base.items()}
    for name, values in groups.items():
        out[name] = {**out.get(name, {}), **values}
    return out


def make_settings(
    model_dir: Path, qdrant_path: Path, redis_url: str | None, **groups: dict[str, Any]
) -> Settings:
    """Settings for a test app; `groups` override whole groups' fields, e.g. reranker={...}.

    The answer cache (on by default in the product) is off here, so that a test of the pipeline
    sees every request run it (a repeated query reaches the rerank cache, a fault is met on every
    request); the answer cache's own tests and the tests of a process run as shipped turn it on."""
    base: Groups = {
        "embedder": {"model_dir": model_dir},
        "qdrant": {"path": qdrant_path},
        "redis": {"url": redis_url},
        "answer_cache": {"enabled": False},
    }
    return Settings(**merge_groups(base, groups))


@asynccontextmanager
async def running_app(settings: Settings, **kwargs: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """The app with its lifespan, and an httpx client talking to it over ASGI."""
    from app.main import create_app

    app = create_app(settings, **kwargs)
    async with LifespanManager(app, startup_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=30) as client:
            yield client, app
            await app.state.rag.pipeline.drain()
