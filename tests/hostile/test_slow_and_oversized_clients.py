"""Slow and oversized clients are cut off cheaply, over real sockets: headers that never end or
never stop growing, bodies that trickle, smuggling shapes. The gateway keeps answering others."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import httpx
from hostile_support import (
    ALICE,
    BODY_TIMEOUT_S,
    HEADER_TIMEOUT_S,
    MALLORY,
    Gateway,
    metric,
    parse_response,
    rag_request,
    raw_exchange,
)

MB = 1024 * 1024
# generous bound on "the server acted on its timeout": the timeout plus scheduling noise
SLACK_S = 5.0


async def closed_by_server(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection; fails if it does not."""
    return await asyncio.wait_for(reader.read(), timeout)


async def test_unfinished_headers_get_408_and_the_connection_is_closed(gateway: Gateway) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(b"GET /livez HTTP/1.1\r\nHost: gateway\r\nX-Slow: ")
    await writer.drain()
    raw = await closed_by_server(reader, HEADER_TIMEOUT_S + SLACK_S)
    writer.close()
    status, _, body = parse_response(raw)
    assert status == 408
    assert json.loads(body)["error"]["type"] == "request_timeout"


async def test_slowloris_is_cut_off_and_livez_keeps_answering(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    """300 connections sending one header byte per second: each is closed once the header
    timeout passes, memory stays flat and /livez answers all along."""
    rss_before = gateway.rss_bytes()
    conns = [await asyncio.open_connection("127.0.0.1", gateway.port) for _ in range(300)]
    line = b"GET /livez HTTP/1.1\r\nHost: gateway\r\nX-Slowloris: " + b"a" * 64
    closed = [False] * len(conns)
    deadline = time.monotonic() + HEADER_TIMEOUT_S + SLACK_S
    i = 0
    while not all(closed) and time.monotonic() < deadline:
        for n, (reader, writer) in enumerate(conns):
            if closed[n]:
                continue
            if reader.at_eof():
                closed[n] = True
                continue
            with contextlib.suppress(ConnectionError):
                writer.write(line[i % len(line) : i % len(line) + 1])
        i += 1
        r = await client.get("/livez", timeout=5)
        assert r.status_code == 200
        await asyncio.sleep(1.0)
        for n, (reader, _) in enumerate(conns):
            if not closed[n]:
                with contextlib.suppress(TimeoutError, ConnectionError):
                    await asyncio.wait_for(reader.read(65536), 0.001)
    assert all(closed), f"{closed.count(False)} slow connections still open"
    assert gateway.rss_bytes() - rss_before < 50 * MB
    for _, writer in conns:
        writer.close()


async def test_huge_headers_get_431_and_memory_stays_flat(gateway: Gateway) -> None:
    """Issue item 3: ten 20 MB unfinished headers raised RSS by 230 MB, no 431."""
    rss_before = gateway.rss_bytes()

    async def send_huge() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        answer = asyncio.ensure_future(closed_by_server(reader, 60))
        writer.write(b"GET /livez HTTP/1.1\r\nHost: gateway\r\nX-Big: ")
        chunk = b"a" * 65536
        with contextlib.suppress(ConnectionError):
            for _ in range(20 * MB // len(chunk)):  # until the server answers
                if answer.done():
                    break
                writer.write(chunk)
                await writer.drain()
        raw = await answer
        writer.close()
        return raw

    answers = await asyncio.gather(*(send_huge() for _ in range(10)))
    for raw in answers:
        status, _, body = parse_response(raw)
        assert status == 431
        assert json.loads(body)["error"]["type"] == "headers_too_large"
    assert gateway.rss_bytes() - rss_before < 50 * MB


async def test_complete_headers_over_the_limit_get_431(gateway: Gateway) -> None:
    big = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"b" * 1000) for i in range(40))
    raw = await raw_exchange(gateway.port, b"GET /livez HTTP/1.1\r\nHost: gateway\r\n" + big + b"\r\n")
    assert parse_response(raw)[0] == 431


async def test_content_length_and_chunked_together_are_a_json_400(gateway: Gateway) -> None:
    body = b'{"q": "test"}'
    for framing in (
        b"Content-Length: 13\r\nTransfer-Encoding: chunked\r\n",
        b"Content-Length: 13\r\nContent-Length: 14\r\n",
        b"Transfer-Encoding: chunked, identity\r\n",
    ):
        request = (
            b"POST /rag HTTP/1.1\r\nHost: gateway\r\n"
            + MALLORY.header_line
            + b"Content-Type: application/json\r\n"
        )
        raw = await raw_exchange(gateway.port, request + framing + b"\r\n" + body)
        status, headers, payload = parse_response(raw)
        assert status == 400, raw[:200]
        assert headers["content-type"] == "application/json"
        assert json.loads(payload)["error"]["type"] == "bad_request"


async def test_a_slow_body_gets_408_and_the_connection_is_closed(gateway: Gateway) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    full = rag_request(b'{"q": "test", "k": 5}', ALICE)
    writer.write(full[:-5])
    await writer.drain()
    raw = await closed_by_server(reader, BODY_TIMEOUT_S + SLACK_S)
    writer.close()
    status, headers, body = parse_response(raw)
    assert status == 408
    assert headers["connection"] == "close"
    assert json.loads(body)["error"]["type"] == "request_timeout"


async def test_slow_bodies_do_not_hold_rag_slots(gateway: Gateway, client: httpx.AsyncClient) -> None:
    """Issue item 2: 64 connections sending part of a /rag body held all 64 slots, and every
    /rag got 503 `overloaded`. A slot is taken only once the body is in."""
    warm = await client.post("/rag", json={"q": "warm up the model", "k": 5}, headers=ALICE.headers)
    assert warm.status_code == 200  # the first query of a process loads what it needs
    conns = []
    for _ in range(64):
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(rag_request(b'{"q": "slow body", "k": 5}', MALLORY)[:-3])
        await writer.drain()
        conns.append((reader, writer))
    await asyncio.sleep(0.2)  # the server has read the headers and waits for the rest
    assert await metric(client, "rag_requests_in_flight") == 0
    t0 = time.monotonic()
    r = await client.post("/rag", json={"q": "chess opening principles", "k": 5}, headers=ALICE.headers)
    elapsed = time.monotonic() - t0
    assert r.status_code == 200, r.text
    assert elapsed < 1.0, elapsed  # the bound: a normal request answered within 1 s
    for reader, writer in conns:
        assert not reader.at_eof()  # still open: they were still sending while we were served
        writer.close()
