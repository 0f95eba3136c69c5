"""The gateway in-process: `create_app(settings)` with its lifespan, and an httpx client that
talks to it over ASGI. Queries go through POST /rag exactly as a user's do (validation,
middleware, pipeline, serialisation); only the socket is missing.

The lifespan is driven with the plain ASGI lifespan protocol and its state handed to every
request, as a server does, so the tool needs nothing beyond the gateway's own dependencies.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.lifespan import STATE_KEY, AppState
from app.main import create_app
from app.settings import Settings


async def _next_message(queue: asyncio.Queue[Message], task: asyncio.Task[None]) -> Message:
    get = asyncio.ensure_future(queue.get())
    done, _ = await asyncio.wait({get, task}, return_when=asyncio.FIRST_COMPLETED)
    if get in done:
        return get.result()
    get.cancel()
    task.result()  # the app's exception, if it raised
    raise RuntimeError("the app ended its lifespan without answering")


@asynccontextmanager
async def lifespan(app: ASGIApp) -> AsyncIterator[dict[str, Any]]:
    """Run the app's startup, yield the lifespan state, run its shutdown."""
    state: dict[str, Any] = {}
    to_app: asyncio.Queue[Message] = asyncio.Queue()
    from_app: asyncio.Queue[Message] = asyncio.Queue()
    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": state}

    async def receive() -> Message:
        return await to_app.get()

    async def send(message: Message) -> None:
        await from_app.put(message)

    task: asyncio.Task[None] = asyncio.ensure_future(app(scope, receive, send))
    await to_app.put({"type": "lifespan.startup"})
    msg = await _next_message(from_app, task)
    if msg["type"] != "lifespan.startup.complete":
        await asyncio.gather(task, return_exceptions=True)
        raise RuntimeError(f"gateway start-up failed: {msg.get('message', msg['type'])}")
    try:
        yield state
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        msg = await _next_message(from_app, task)
        await task
        if msg["type"] != "lifespan.shutdown.complete":
            raise RuntimeError(f"gateway shutdown failed: {msg.get('message', msg['type'])}")


def with_state(app: ASGIApp, state: dict[str, Any]) -> ASGIApp:
    """Give each request a shallow copy of the lifespan state, as ASGI servers do."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, "state": dict(state)}
        await app(scope, receive, send)

    return wrapped


@asynccontextmanager
async def running_gateway(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, AppState]]:
    app = create_app(settings)
    async with lifespan(app) as state:
        transport = httpx.ASGITransport(app=with_state(app, state))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=120) as client:
            rag: AppState = state[STATE_KEY]
            try:
                yield client, rag
            finally:
                await rag.pipeline.drain()
