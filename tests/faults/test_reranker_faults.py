"""A failing HTTP reranker (TEI /rerank test server behind a fault proxy): degraded answers in
vector order, never cached; the breaker opens, answers without calling, half-opens after the
wait and closes; retries counted on the server and bounded by the budget; no attempt after the
deadline; single flight."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import httpx
import pytest
from support.prom import metric

from .reranker_server import Behaviour, RerankerServer
from .support import queries, timed_rag

K = 12


def rerank_keys(redis_server: Any) -> list[str]:
    out: str = redis_server.cli("--scan", "--pattern", "rerank:v1:*")
    return [k for k in out.splitlines() if k]


async def vector_order(client: httpx.AsyncClient, q: str) -> list[str]:
    r = await client.post("/rag", json={"q": q, "k": K, "rerank": False})
    assert r.status_code == 200
    return [p["id"] for p in r.json()["results"]]


@pytest.mark.parametrize(
    ("behaviour", "reason", "server_calls"),
    [
        (Behaviour("status", status=503), "unavailable", 2),  # transient: retried once
        (Behaviour("status", status=500), "bad_response", 1),  # not retried
        (Behaviour("nan"), "bad_response", 1),
        (Behaviour("malformed"), "bad_response", 1),
        (Behaviour("wrong_count"), "bad_response", 1),
        (Behaviour("hang"), "timeout", 2),
    ],
    ids=["503", "500", "nan", "malformed", "wrong-count", "hang"],
)
async def test_failing_reranker_degrades_to_vector_order_and_is_never_cached(
    fault_settings: Any,
    running_app: Any,
    reranker: RerankerServer,
    redis_server: Any,
    behaviour: Behaviour,
    reason: str,
    server_calls: int,
) -> None:
    q = "how do I keep a sourdough starter alive"
    async with running_app(fault_settings(server={"deadline_s": 2.0})) as (client, app):
        expected = await vector_order(client, q)
        reranker.set(behaviour.mode, status=behaviour.status)
        r = await timed_rag(client, q=q, k=K)
        assert r.status == 200, r.response.text
        body = r.json()
        assert body["degraded"] == [{"component": "reranker", "reason": reason}]
        assert body["reranked"] is False and body["cache"] == "miss"
        assert [p["id"] for p in body["results"]] == expected  # vector order stands
        assert all(p["score"] == p["vector_score"] for p in body["results"])
        assert reranker.count == server_calls
        assert await metric(client, "rag_degraded_total", component="reranker", reason=reason) == 1
        await app.state.rag.pipeline.drain()
        assert rerank_keys(redis_server) == []  # a degraded answer is never cached

        reranker.set("ok")
        again = (await timed_rag(client, q=q, k=K)).json()
        assert again["cache"] == "miss" and again["reranked"] is True and again["degraded"] == []
        assert [p["id"] for p in again["results"]] == expected[::-1]  # the test server reverses
        await app.state.rag.pipeline.drain()
        assert len(rerank_keys(redis_server)) == 1


async def gauge(client: httpx.AsyncClient, dependency: str) -> float:
    return await metric(client, "rag_circuit_breaker_state", dependency=dependency)


async def test_breaker_opens_answers_without_calling_half_opens_after_the_wait_and_closes(
    fault_settings: Any, running_app: Any, reranker: RerankerServer
) -> None:
    settings = fault_settings(
        resilience={
            "retry_attempts": 0,
            "breaker_window": 4,
            "breaker_min_calls": 4,
            "breaker_failure_rate": 0.5,
            "breaker_open_s": 1.0,
            "breaker_half_open_permits": 2,
        }
    )
    qs = iter(queries(40, "breaker"))
    async with running_app(settings) as (client, _):
        assert await gauge(client, "reranker") == 0
        reranker.set("status", status=500)
        for i in range(1, 4):  # below min_calls: stays closed
            body = (await timed_rag(client, q=next(qs), k=K)).json()
            assert body["degraded"][0]["reason"] == "bad_response"
            assert reranker.count == i and await gauge(client, "reranker") == 0
        body = (await timed_rag(client, q=next(qs), k=K)).json()  # the 4th call opens it
        opened = time.monotonic()
        assert reranker.count == 4 and await gauge(client, "reranker") == 2

        reranker.set("ok")  # healthy again, but the open breaker must not even ask
        for _ in range(5):
            r = await timed_rag(client, q=next(qs), k=K)
            assert r.status == 200
            assert r.json()["degraded"] == [{"component": "reranker", "reason": "circuit_open"}]
            assert r.json()["timings_ms"]["rerank"] < 50  # answered from the breaker, not a wait
        assert reranker.count == 4
        assert await metric(client, "rag_degraded_total", component="reranker", reason="circuit_open") == 5

        await asyncio.sleep(max(0.0, opened + 0.5 - time.monotonic()))  # well before the wait ends
        body = (await timed_rag(client, q=next(qs), k=K)).json()
        assert body["degraded"][0]["reason"] == "circuit_open" and reranker.count == 4

        await asyncio.sleep(max(0.0, opened + 1.05 - time.monotonic()))  # just after the wait
        body = (await timed_rag(client, q=next(qs), k=K)).json()  # trial 1 of 2
        assert body["reranked"] is True and reranker.count == 5
        assert await gauge(client, "reranker") == 1
        body = (await timed_rag(client, q=next(qs), k=K)).json()  # trial 2: closes it
        assert body["reranked"] is True and reranker.count == 6
        assert await gauge(client, "reranker") == 0
        text = (await client.get("/metrics")).text
        assert 'rag_circuit_breaker_state{dependency="reranker"} 0.0' in text
        assert 'rag_circuit_breaker_state{dependency="redis"} 0.0' in text


async def test_a_failed_half_open_trial_reopens_the_breaker(
    fault_settings: Any, running_app: Any, reranker: RerankerServer
) -> None:
    settings = fault_settings(
        resilience={"retry_attempts": 0, "breaker_window": 2, "breaker_min_calls": 2, "breaker_open_s": 0.5}
    )
    qs = iter(queries(10, "reopen"))
    async with running_app(settings) as (client, _):
        reranker.set("status", status=503)
        for _ in range(2):
            await timed_rag(client, q=next(qs), k=K)
        assert await gauge(client, "reranker") == 2
        await asyncio.sleep(0.55)
        body = (await timed_rag(client, q=next(qs), k=K)).json()  # the trial fails
        assert body["degraded"][0]["reason"] == "unavailable" and reranker.count == 3
        assert await gauge(client, "reranker") == 2
        body = (await timed_rag(client, q=next(qs), k=K)).json()
        assert body["degraded"][0]["reason"] == "circuit_open" and reranker.count == 3


async def test_4xx_is_never_retried_and_never_opens_the_breaker(
    fault_settings: Any, running_app: Any, reranker: RerankerServer
) -> None:
    settings = fault_settings(resilience={"retry_attempts": 3, "breaker_window": 2, "breaker_min_calls": 2})
    async with running_app(settings) as (client, _):
        reranker.set("status", status=422)
        for i, q in enumerate(queries(6, "4xx"), start=1):
            body = (await timed_rag(client, q=q, k=K)).json()
            assert body["degraded"] == [{"component": "reranker", "reason": "rejected"}]
            assert reranker.count == i  # one attempt each
        assert await gauge(client, "reranker") == 0
        assert await metric(client, "rag_upstream_retries_total", dependency="reranker") == 0


async def test_retries_are_counted_on_the_server_and_bounded_by_the_budget(
    fault_settings: Any, running_app: Any, reranker: RerankerServer
) -> None:
    floor, ratio, calls = 2, 0.2, 15
    settings = fault_settings(
        resilience={
            "retry_attempts": 3,
            "retry_budget_floor": floor,
            "retry_budget_ratio": ratio,
            # a breaker that never opens here, so that only the budget holds the load back
            "breaker_window": 100,
            "breaker_min_calls": 100,
            "breaker_failure_rate": 1.0,
        }
    )
    async with running_app(settings) as (client, _):
        # a transient failure then success: one retry, seen by the server, and a good answer
        reranker.script(Behaviour("status", status=503))
        body = (await timed_rag(client, q="retry me", k=K)).json()
        assert body["reranked"] is True and body["degraded"] == []
        assert reranker.count == 2
        assert await metric(client, "rag_upstream_retries_total", dependency="reranker") == 1

        reranker.reset()
        reranker.set("status", status=503)  # now a dependency failing 100% of calls
        for q in queries(calls, "budget"):
            r = await timed_rag(client, q=q, k=K)
            assert r.status == 200 and r.json()["degraded"][0]["reason"] == "unavailable"
        retries = reranker.count - calls
        assert retries == await metric(client, "rag_upstream_retries_total", dependency="reranker") - 1
        # without the budget: 15 * 3 = 45 retries; with it, the floor plus 20% of the calls
        assert floor <= retries <= floor + math.ceil(ratio * (calls + 1)) - 1


async def test_no_reranker_attempt_starts_after_the_deadline(
    fault_settings: Any, running_app: Any, reranker: RerankerServer
) -> None:
    settings = fault_settings(
        reranker={"timeout_s": 0.3},
        resilience={"retry_attempts": 5, "retry_base_s": 0.01, "retry_cap_s": 0.02, "retry_budget_floor": 50},
    )
    async with running_app(settings) as (client, _):
        reranker.set("slow", delay_s=5.0)
        for q in queries(3, "deadline"):
            before = reranker.count
            r = await timed_rag(client, headers={"X-Request-Timeout": "0.5"}, q=q, k=K)
            assert r.status == 200
            assert r.json()["degraded"][0]["reason"] in ("deadline", "timeout")
            # 0.3 s, then a retry cut at the deadline: at most two attempts, never a third (which
            # could only start after the deadline)
            assert reranker.count - before <= 2
        assert reranker.count <= 6


async def test_concurrent_identical_misses_make_exactly_one_reranker_call(
    fault_settings: Any, running_app: Any, reranker: RerankerServer
) -> None:
    # Redis bounds generous enough that a loaded machine cannot turn a slow cache answer into a
    # bypass: this test is about one shared reranker call
    settings = fault_settings(
        server={"deadline_s": 3.0},
        reranker={"timeout_s": 2.0},
        redis={"timeout_s": 1.0, "connect_timeout_s": 1.0},
    )
    async with running_app(settings) as (client, app):
        reranker.set("slow", delay_s=0.4)
        q = "chess opening principles"
        await vector_order(client, q)  # warm the query embedding, so all arrive together
        rs = await asyncio.gather(*(timed_rag(client, q=q, k=K) for _ in range(6)))
        assert [r.status for r in rs] == [200] * 6
        bodies = [r.json() for r in rs]
        # a straggler on a loaded machine may arrive after the shared call was cached: a hit
        assert all(b["reranked"] and b["cache"] in ("miss", "hit") for b in bodies), bodies
        assert sum(b["cache"] == "miss" for b in bodies) >= 2
        assert len({tuple(p["id"] for p in b["results"]) for b in bodies}) == 1
        assert reranker.count == 1
        await app.state.rag.pipeline.drain()
        hit = (await timed_rag(client, q=q, k=K)).json()
        assert hit["cache"] == "hit" and reranker.count == 1
