"""Helpers of the fault tests: a real uvicorn gateway in the test's loop, timing of one /rag call,
and distinct queries (ports and /metrics samples come from the shared `support` package)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from support.net import free_port

from app.settings import Settings

# Slack over a deadline for "answered in time": the gateway's own work after the deadline
# (serialising, the ASGI hop) plus scheduling noise on a small machine shared with others.
SLACK_S = 0.25


def queries(n: int, tag: str = "") -> list[str]:
    """n distinct queries: distinct rerank cache keys and distinct single-flight keys."""
    bases = [
        "how do I keep a sourdough starter alive",
        "best grind size for espresso",
        "telescope aperture and magnification",
        "chess opening principles",
        "budgeting for retirement",
        "kubernetes pod restarts",
    ]
    return [f"{bases[i % len(bases)]} {tag}{i}" for i in range(n)]


class _InLoopServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the test runner keeps its own signal handlers


@contextlib.asynccontextmanager
async def served_app(settings: Settings) -> AsyncIterator[tuple[str, Any]]:
    """The gateway served for real by uvicorn on a free loopback port, in this event loop."""
    from app.main import create_app

    app = create_app(settings)
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        lifespan="on",
        log_config=None,
        log_level="warning",
        access_log=False,
    )
    server = _InLoopServer(config)
    task = asyncio.ensure_future(server.serve())
    end = time.monotonic() + 60
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped during start-up")
        if time.monotonic() > end:
            raise TimeoutError("uvicorn did not start")
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


@dataclass
class Timed:
    response: httpx.Response
    started: float
    elapsed: float

    @property
    def status(self) -> int:
        return self.response.status_code

    @property
    def headers(self) -> httpx.Headers:
        return self.response.headers

    def json(self) -> Any:
        return self.response.json()


async def timed_rag(client: httpx.AsyncClient, headers: dict[str, str] | None = None, **body: Any) -> Timed:
    t0 = time.monotonic()
    r = await client.post("/rag", json=body, headers=headers)
    return Timed(r, t0, time.monotonic() - t0)
