"""Pure ASGI middleware for the request body and the /rag work it starts (installed by
app/api/middleware.py, inside the error handling; each raises a domain error, which
app/api/errors.py turns into the answer):

- BodyLimitMiddleware: the whole body is read before the handler runs (except for the streamed
  upload of POST /jobs/ingest, which app/api/jobs.py bounds itself), within the size limit
  (PayloadTooLarge, 413; also for chunked bodies) and the body-read timeout (RequestTimeout,
  408 and the connection closed); a client that leaves while sending it is ClientDisconnected
  (499);
- ConcurrencyLimitMiddleware: the in-flight cap on /rag (Overloaded, 503, without touching a
  dependency); it runs once the whole body is in, so a client still sending holds no slot, and
  after the answer cache's early lookup (app/api/answers.py), so a hit needs no slot;
- CancelOnDisconnectMiddleware: /rag work is cancelled when the client disconnects
  (ClientDisconnected, 499, as for a client leaving while it sends its body).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.context import ContextMiddleware, RequestContext
from app.errors import ClientDisconnected, Overloaded, PayloadTooLarge, RequestTimeout

RAG_PATH = "/rag"
STREAMED_PATHS = frozenset({"/jobs/ingest"})


def media_type(content_type: str | None) -> str:
    """A Content-Type's media type, lower-cased, without its parameters ("" when absent)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


async def read_body(headers: Mapping[str, str], receive: Receive, limit: int) -> bytes:
    """The whole body; PayloadTooLarge past `limit` bytes, ClientDisconnected if the client left."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected("the client left while sending the request body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class BodyLimitMiddleware(ContextMiddleware):
    async def handle(self, ctx: RequestContext, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] in STREAMED_PATHS:
            # a job's upload goes to disk as it arrives, under its own size limit and idle
            # timeout (app/api/jobs.py), never into memory here
            await self.app(scope, receive, send)
            return
        server = ctx.app.settings.server
        limit = server.max_body_bytes
        if scope["path"] == "/documents":
            limit = server.max_documents_body_bytes  # ingestion has its own limit
        try:
            async with asyncio.timeout(server.body_timeout_s):
                body = await read_body(ctx.headers, receive, limit)
        except TimeoutError:
            # a client that trickles its body holds a connection and memory: cut it off
            raise RequestTimeout(
                f"the request body did not arrive within {server.body_timeout_s:g}s"
            ) from None
        whole: Message = {"type": "http.request", "body": body, "more_body": False}
        await self.app(scope, replaying(whole, receive), send)  # then what the server says next


def replaying(message: Message, receive: Receive) -> Receive:
    """`receive` for the app inside a middleware that has read the body's one message: that
    message first, then whatever the server sends next."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return message
        return await receive()

    return replay


class ConcurrencyLimitMiddleware(ContextMiddleware):
    path = RAG_PATH

    def __init__(self, app: ASGIApp) -> None:
        super().__init__(app)
        self.in_flight = 0  # requests of `path` in this process

    async def handle(self, ctx: RequestContext, scope: Scope, receive: Receive, send: Send) -> None:
        state = ctx.app
        if self.in_flight >= state.settings.server.max_in_flight:
            raise Overloaded("too many requests in flight; retry shortly")
        self.in_flight += 1
        state.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            state.metrics.in_flight.dec()


class CancelOnDisconnectMiddleware(ContextMiddleware):
    """Runs the handler in a task of its own and cancels it when the client disconnects before
    the answer is complete. Expects the body whole in one message (BodyLimitMiddleware)."""

    path = RAG_PATH

    async def handle(self, ctx: RequestContext, scope: Scope, receive: Receive, send: Send) -> None:
        body = await receive()
        disconnected = asyncio.Event()
        replayed = False
        answered = False  # the last body chunk went out: a disconnect now cancels nothing

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return body
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def send_tracked(message: Message) -> None:
            nonlocal answered
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                answered = True

        handler = asyncio.ensure_future(self.app(scope, replay, send_tracked))

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    disconnected.set()
                    # servers report "disconnect" once the response is complete, too
                    if not answered:
                        handler.cancel()
                    return

        watcher = asyncio.ensure_future(watch())
        try:
            await handler
        except asyncio.CancelledError:
            if not disconnected.is_set():
                raise  # we were cancelled ourselves (shutdown): pass it on
            raise ClientDisconnected("the client left before the answer") from None
        finally:
            watcher.cancel()
