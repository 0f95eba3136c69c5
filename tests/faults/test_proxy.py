"""The fault proxy itself, against a tiny echo server: each mode does what it says."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from .proxy import FaultProxy, Mode


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


async def roundtrip(port: int, payload: bytes, timeout: float = 1.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        got = b""
        async with asyncio.timeout(timeout):
            while len(got) < len(payload):
                chunk = await reader.read(65536)
                if not chunk:
                    break
                got += chunk
        return got
    finally:
        writer.close()


async def open_and_ping(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection through the proxy, shown to work with one echoed "ping"."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"ping")
    assert await reader.read(4) == b"ping"
    return reader, writer


async def test_pass_and_delay(echo_port: int) -> None:
    with FaultProxy(echo_port) as proxy:
        assert await roundtrip(proxy.port, b"hello") == b"hello"
        proxy.set(Mode.DELAY, delay_s=0.2)
        t0 = time.monotonic()
        assert await roundtrip(proxy.port, b"slow") == b"slow"
        assert time.monotonic() - t0 >= 0.35  # delayed on the way up and on the way down
        assert proxy.accepted == 2 and proxy.upstream_connects == 2


async def test_black_hole_swallows_new_and_open_connections(echo_port: int) -> None:
    with FaultProxy(echo_port) as proxy:
        reader, writer = await open_and_ping(proxy.port)
        proxy.set(Mode.BLACK_HOLE)
        writer.write(b"lost")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await reader.read(4)
        writer.close()
        with pytest.raises(TimeoutError):
            await roundtrip(proxy.port, b"void", timeout=0.3)
        assert proxy.upstream_connects == 1  # the new connection never reached the upstream


async def test_reset_new_and_open_connections(echo_port: int) -> None:
    with FaultProxy(echo_port) as proxy:
        reader, _writer = await open_and_ping(proxy.port)
        proxy.set(Mode.RESET)

        async def read_until_closed() -> None:
            async with asyncio.timeout(2):
                while await reader.read(4):
                    pass

        with pytest.raises(ConnectionResetError):  # not a clean close: a reset
            await read_until_closed()
        with pytest.raises(ConnectionResetError):
            await roundtrip(proxy.port, b"x" * 10)


async def test_close_after_n_bytes(echo_port: int) -> None:
    with FaultProxy(echo_port) as proxy:
        proxy.set(Mode.CLOSE_AFTER, after_bytes=5)
        assert await roundtrip(proxy.port, b"0123456789") == b"01234"


async def test_upstream_down_closes_the_client(echo_port: int) -> None:
    from support.net import free_port

    with FaultProxy(free_port()) as proxy:
        assert await roundtrip(proxy.port, b"anyone?") == b""
