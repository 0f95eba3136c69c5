"""Small ASGI stubs served for real: uvicorn on a loopback port in a thread, and reading a body."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


async def read_body(receive: Any) -> bytes:
    """The whole request body, however many `http.request` messages it came in."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


@contextmanager
def serve_asgi(app: Any, port: int, name: str = "stub-http") -> Iterator[None]:
    """`app` served by uvicorn (HTTP/1.1, no lifespan) on 127.0.0.1:`port` in a daemon thread,
    started when this enters and stopped when it exits."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        lifespan="off",
        log_level="error",
        access_log=False,
        loop="asyncio",
        http="h11",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    end = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > end or not thread.is_alive():
            raise RuntimeError(f"{name}: the stub HTTP server did not start")
        time.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=5)
