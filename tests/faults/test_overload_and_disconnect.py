"""The gateway served for real by uvicorn on a loopback port: a burst over the in-flight cap is
shed fast without touching a dependency, and a client that hangs up cancels the reranker call."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
from support.poll import apoll
from support.prom import metric, parse_samples

from .proxy import FaultProxy
from .reranker_server import RerankerServer
from .support import queries, served_app

K = 10


async def test_a_burst_over_the_in_flight_cap_is_shed_fast_and_the_process_stays_healthy(
    fault_settings: Any, reranker: RerankerServer
) -> None:
    cap, burst = 3, 12
    settings = fault_settings(
        server={"max_in_flight": cap, "deadline_s": 5.0, "retry_after_s": 2},
        reranker={"timeout_s": 4.0},
        resilience={"retry_attempts": 0},
    )
    reranker.set("slow", delay_s=1.0)
    async with (
        served_app(settings) as (url, _),
        httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=burst + 5)) as client,
    ):
        embeds_before = await metric(client, "rag_stage_duration_seconds_count", stage="embed")

        answered: list[int] = []  # status codes in the order the answers arrived

        async def one(q: str) -> tuple[int, int, httpx.Response]:
            r = await client.post("/rag", json={"q": q, "k": K})
            admitted_done = answered.count(200)  # admitted requests answered before this one
            answered.append(r.status_code)
            return r.status_code, admitted_done, r

        tasks = [asyncio.ensure_future(one(q)) for q in queries(burst, "burst")]
        await apoll(lambda: reranker.count == cap, 10, what="the admitted requests reach the reranker")
        in_flight = parse_samples((await client.get("/metrics")).text)[
            ("rag_requests_in_flight", frozenset())
        ]
        assert in_flight == cap
        results = await asyncio.gather(*tasks)

        ok = [r for status, _, r in results if status == 200]
        shed = [(admitted_done, r) for status, admitted_done, r in results if status == 503]
        assert len(ok) == cap and len(shed) == burst - cap, [s for s, _, _ in results]
        assert all(r.json()["reranked"] for r in ok)
        for admitted_done, r in shed:
            assert r.json()["error"]["type"] == "overloaded"
            assert r.headers["retry-after"] == "2"
            assert admitted_done == 0  # answered before any admitted request could finish
        # the excess touched no dependency: only the admitted requests embedded and reranked
        assert reranker.count == cap
        embeds = await metric(client, "rag_stage_duration_seconds_count", stage="embed")
        assert embeds - embeds_before == cap
        assert await metric(client, "rag_requests_in_flight") == 0

        assert (await client.get("/livez")).status_code == 200
        reranker.set("ok")
        later = await asyncio.gather(
            *(client.post("/rag", json={"q": q, "k": K}) for q in queries(cap, "after"))
        )
        assert [r.status_code for r in later] == [200] * cap


def raw_request(port: int, body: dict[str, Any]) -> bytes:
    payload = json.dumps(body).encode()
    head = (
        f"POST /rag HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


async def test_a_client_hanging_up_cancels_the_reranker_call(
    fault_settings: Any, reranker: RerankerServer, reranker_proxy: FaultProxy
) -> None:
    settings = fault_settings(server={"deadline_s": 10.0}, reranker={"timeout_s": 8.0})
    reranker.set("hang")
    async with served_app(settings) as (url, _), httpx.AsyncClient(base_url=url, timeout=30) as client:
        port = int(url.rsplit(":", 1)[1])
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw_request(port, {"q": "hang up on me", "k": K}))
        await writer.drain()
        await apoll(lambda: reranker.count == 1, 10, what="the reranker call starts")
        writer.close()  # the client goes away while the reranker holds its request
        await apoll(lambda: reranker.outcomes() == ["disconnected"], 5, what="the reranker call is cancelled")
        # cancelled by the hang-up, not ended by the call's timeout nor the deadline
        assert await metric(client, "rag_degraded_total", component="reranker", reason="timeout") == 0
        assert await metric(client, "rag_degraded_total", component="reranker", reason="deadline") == 0
        await apoll(lambda: reranker_proxy.open_connections == 0, 5, what="the connection is closed")

        await wait_until_metric_zero(client)
        text = (await client.get("/metrics")).text
        assert 'route="/rag",status="499"' in text
        # a cancelled call is neither success nor failure for the breaker
        assert await metric(client, "rag_circuit_breaker_state", dependency="reranker") == 0
        reranker.set("ok")
        r = await client.post("/rag", json={"q": "hang up on me", "k": K})
        assert r.status_code == 200 and r.json()["reranked"] is True and r.json()["cache"] == "miss"


async def wait_until_metric_zero(client: httpx.AsyncClient) -> None:
    end = time.monotonic() + 5
    while await metric(client, "rag_requests_in_flight") != 0:
        assert time.monotonic() < end, "rag_requests_in_flight never went back to 0"
        await asyncio.sleep(0.02)


async def test_the_shared_reranker_call_lives_until_its_last_client_hangs_up(
    fault_settings: Any, reranker: RerankerServer
) -> None:
    settings = fault_settings(server={"deadline_s": 10.0}, reranker={"timeout_s": 8.0})
    reranker.set("hang")
    body = {"q": "two callers, one call", "k": K}
    async with served_app(settings) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        for _, w in conns:
            w.write(raw_request(port, body))
            await w.drain()
        await apoll(lambda: reranker.count == 1, 10, what="one shared reranker call")
        await asyncio.sleep(0.3)  # both are waiting on it now
        conns[0][1].close()
        await asyncio.sleep(0.5)
        assert reranker.outcomes() == ["pending"]  # the other client still wants it
        conns[1][1].close()
        await apoll(lambda: reranker.outcomes() == ["disconnected"], 5, what="cancelled with the last client")
        assert reranker.count == 1


async def test_with_the_answer_cache_on_a_hit_is_served_while_misses_are_shed(
    fault_settings: Any, reranker: RerankerServer
) -> None:
    cap = 2
    settings = fault_settings(
        server={"max_in_flight": cap, "deadline_s": 5.0},
        reranker={"timeout_s": 4.0},
        resilience={"retry_attempts": 0},
        answer_cache={"enabled": True},
    )
    async with (
        served_app(settings) as (url, _),
        httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=cap + 5)) as client,
    ):
        cached = {"q": queries(1, "cached")[0], "k": K}
        first = await client.post("/rag", json=cached)
        assert first.status_code == 200 and first.headers["x-answer-cache"] == "miss", first.text
        reranker.set("slow", delay_s=1.0)
        before = reranker.count
        slow = [
            asyncio.ensure_future(client.post("/rag", json={"q": q, "k": K})) for q in queries(cap, "slow")
        ]
        await apoll(lambda: reranker.count == before + cap, 10, what="the misses hold every slot")

        hit = await client.post("/rag", json=cached)
        shed = await client.post("/rag", json={"q": "a question nobody asked yet", "k": K})
        assert hit.status_code == 200 and hit.headers["x-answer-cache"] == "hit", hit.text
        assert hit.json()["results"] == first.json()["results"]
        assert shed.status_code == 503 and shed.json()["error"]["type"] == "overloaded", shed.text
        assert [r.status_code for r in await asyncio.gather(*slow)] == [200] * cap
