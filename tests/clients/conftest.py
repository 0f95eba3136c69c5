"""Fixtures for the client tests: a programmable HTTP server on loopback (uvicorn in a thread),
a port where nothing listens, and a port that accepts connections but never answers."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from support.asgi import read_body, serve_asgi
from support.net import free_port


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"{}"
    delay_s: float = 0.0
    content_type: str = "application/json"


@dataclass
class StubServer:
    """A real HTTP/1.1 server on loopback. Tests set `routes[(method, path)]` to the reply they
    want; every request is recorded in `requests` as (method, path, body bytes)."""

    port: int
    routes: dict[tuple[str, str], Reply] = field(default_factory=dict)
    requests: list[tuple[str, str, bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        self.routes.clear()
        self.requests.clear()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        method, path = scope["method"], scope["path"]
        self.requests.append((method, path, body))
        reply = self.routes.get((method, path), Reply(404, b'{"error": "no route"}'))
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        headers = [(b"content-type", reply.content_type.encode())]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})


@pytest.fixture(scope="session")
def stub_server() -> Iterator[StubServer]:
    stub = StubServer(free_port())
    with serve_asgi(stub, stub.port):
        yield stub


@pytest.fixture
def stub(stub_server: StubServer) -> StubServer:
    stub_server.reset()
    return stub_server


@pytest.fixture
def dead_port() -> int:
    """A loopback port with nothing listening: connections are refused."""
    return free_port()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that completes the TCP handshake (kernel backlog) but never reads or
    answers: every request on it times out."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


@pytest.fixture
def redis(redis_server: Any) -> Iterator[Any]:
    """The session's Redis, left running and resumed whatever the test did to it."""
    yield redis_server
    if redis_server.proc is None:
        redis_server.start()
    redis_server.resume()
