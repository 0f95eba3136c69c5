"""Status and labels tell the truth: a client that leaves is 499 (never 500), and every answer to
a known route carries its route template, also answers given before routing."""

from __future__ import annotations

import asyncio

import httpx
from hostile_support import ALICE, MALLORY, Gateway, parse_response, rag_request, raw_exchange, request_count


async def wait_count(
    client: httpx.AsyncClient, method: str, route: str, status: int, at_least: float
) -> None:
    for _ in range(100):
        if await request_count(client, method, route, status) >= at_least:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{method} {route} {status} not counted")


async def test_a_client_leaving_mid_body_is_499_on_the_rag_route(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    """Issue item 5: recorded as route="unmatched", status="500"; a canary gate on 5xx failed."""
    before = await request_count(client, "POST", "/rag", 499)
    unmatched_500 = await request_count(client, "POST", "unmatched", 500)
    for _ in range(5):
        _, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(rag_request(b'{"q": "leaving", "k": 5}', MALLORY)[:-6])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()
    for _ in range(3):  # and some leave during their headers: never reach the app, never a 500
        _, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(b"POST /rag HTTP/1.1\r\nHost: gateway\r\nContent-Len")
        await writer.drain()
        writer.close()
    await wait_count(client, "POST", "/rag", 499, before + 5)
    assert await request_count(client, "POST", "unmatched", 500) == unmatched_500
    assert await request_count(client, "POST", "/rag", 500) == 0


async def test_413_and_408_on_rag_carry_the_route(gateway: Gateway, client: httpx.AsyncClient) -> None:
    """Issue item 6: answers given before routing were labelled route="unmatched"."""
    before = await request_count(client, "POST", "/rag", 413)
    head = b"POST /rag HTTP/1.1\r\nHost: gateway\r\n" + ALICE.header_line
    raw = await raw_exchange(gateway.port, head + b"Content-Length: 100000000\r\n\r\n")
    assert parse_response(raw)[0] == 413
    await wait_count(client, "POST", "/rag", 413, before + 1)


async def test_docs_openapi_and_wrong_methods_carry_their_route(client: httpx.AsyncClient) -> None:
    assert (await client.get("/docs")).status_code == 200
    assert (await client.get("/openapi.json")).status_code == 200
    assert (await client.put("/rag", headers=ALICE.headers)).status_code == 405
    await wait_count(client, "GET", "/docs", 200, 1)
    await wait_count(client, "GET", "/openapi.json", 200, 1)
    await wait_count(client, "PUT", "/rag", 405, 1)


async def test_head_livez_is_200(client: httpx.AsyncClient) -> None:
    r = await client.head("/livez")
    assert r.status_code == 200
    assert r.content == b""
