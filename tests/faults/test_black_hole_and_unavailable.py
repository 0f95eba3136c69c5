"""Dependencies black-holed (a fault proxy that accepts and never answers) or gone (a dead
port): every /rag answers within its deadline; Redis and the reranker degrade the answer; the
embedder and Qdrant (critical) give 503 `upstream_unavailable` with Retry-After or 504, never
500, and the 503 is immediate once their breaker is open."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from support.net import free_port
from support.paths import MODEL_DIR
from support.prom import metric

from .proxy import FaultProxy, Mode
from .reranker_server import RerankerServer
from .support import queries, timed_rag

K = 10
# the bound: deadline + 100 ms. What runs after the deadline is only our own answer.
BLACK_HOLE_SLACK_S = 0.1


async def test_redis_and_reranker_black_holed_answers_degraded_within_the_deadline(
    fault_settings: Any,
    running_app: Any,
    reranker: RerankerServer,
    redis_proxy: FaultProxy,
    reranker_proxy: FaultProxy,
) -> None:
    deadline = 1.0
    # one reranker attempt (0.8 s) fits, its retry is cut by the deadline
    settings = fault_settings(server={"deadline_s": deadline}, reranker={"timeout_s": 0.8})
    async with running_app(settings) as (client, _):
        warm = (await timed_rag(client, q="warm up", k=K)).json()
        assert warm["reranked"] is True and warm["cache"] == "miss"  # pooled connections exist now
        redis_proxy.set(Mode.BLACK_HOLE)
        reranker_proxy.set(Mode.BLACK_HOLE)
        reasons = []
        for i, q in enumerate(queries(6, "void")):
            timeout = deadline if i % 2 == 0 else 0.5
            r = await timed_rag(client, headers={"X-Request-Timeout": str(timeout)}, q=q, k=K)
            assert r.status == 200, r.response.text
            assert r.elapsed <= timeout + BLACK_HOLE_SLACK_S, (i, r.elapsed)
            body = r.json()
            assert body["cache"] == "bypass" and body["reranked"] is False
            assert [d["component"] for d in body["degraded"]] == ["reranker"]
            reasons.append(body["degraded"][0]["reason"])
        assert set(reasons) <= {"deadline", "timeout", "circuit_open"}, reasons
        assert reranker.count == 1  # only the warm-up got through the black hole


CRITICAL = ["embedder", "qdrant"]


def critical_settings(
    which: str, target: str, fault_settings: Callable[..., Any], deadline: float, **resilience: Any
) -> Any:
    groups: dict[str, Any] = {
        "server": {"deadline_s": deadline, "retry_after_s": 3},
        "resilience": {
            "retry_attempts": 1,
            "breaker_window": 4,
            "breaker_min_calls": 4,
            "breaker_open_s": 30.0,
            **resilience,
        },
    }
    if which == "embedder":
        # the collection was embedded by the ONNX model; this remote stands in for the same weights
        onnx = json.loads((MODEL_DIR / "manifest.json").read_text())
        groups["embedder"] = {
            "kind": "http",
            "url": f"http://{target}",
            "timeout_s": 0.4,
            "id": f"{onnx['model']}@{onnx['revision']}",
        }
    else:
        groups["qdrant"] = {"url": f"http://{target}", "timeout_s": 0.4}
    return fault_settings(**groups)


@pytest.mark.parametrize("which", CRITICAL)
async def test_critical_dependency_down_is_503_with_retry_after_and_fast_once_open(
    fault_settings: Any, running_app: Any, reranker: RerankerServer, which: str
) -> None:
    settings = critical_settings(which, f"127.0.0.1:{free_port()}", fault_settings, deadline=2.0)
    async with running_app(settings) as (client, _):
        messages, retries = [], []
        for q in queries(6, which):
            before = await metric(client, "rag_upstream_retries_total", dependency=which)
            r = await timed_rag(client, q=q, k=K)
            assert r.status == 503, r.response.text
            assert r.json()["error"]["type"] == "upstream_unavailable"  # not the deadline's 504
            assert r.headers["retry-after"] == "3"
            messages.append(r.json()["error"]["message"])
            retries.append(await metric(client, "rag_upstream_retries_total", dependency=which) - before)
        # a refused connection fails at once: one retry each until the breaker opens, then the
        # requests make no attempt at all (nothing to wait for)
        assert retries == [1, 1, 0, 0, 0, 0], retries
        # two failed attempts per request: the breaker opened during the second request
        assert all(m.startswith(f"{which}: ") for m in messages)
        assert "circuit breaker is open" not in messages[0]
        assert all("circuit breaker is open" in m for m in messages[2:]), messages
        assert await metric(client, "rag_circuit_breaker_state", dependency=which) == 2
        assert reranker.count == 0


@pytest.mark.parametrize("which", CRITICAL)
async def test_everything_black_holed_answers_within_the_deadline_then_fast_once_open(
    fault_settings: Any,
    running_app: Any,
    proxies: Callable[[int], FaultProxy],
    redis_proxy: FaultProxy,
    reranker_proxy: FaultProxy,
    reranker: RerankerServer,
    which: str,
) -> None:
    deadline = 0.6
    hole = proxies(free_port())
    for p in (hole, redis_proxy, reranker_proxy):
        p.set(Mode.BLACK_HOLE)
    settings = critical_settings(which, hole.url, fault_settings, deadline=deadline)
    async with running_app(settings) as (client, _):
        statuses = []
        for q in queries(6, f"hole-{which}"):
            r = await timed_rag(client, q=q, k=K)
            assert r.status in (503, 504), r.response.text  # never a 500
            assert r.elapsed <= deadline + BLACK_HOLE_SLACK_S, r.elapsed
            statuses.append((r.status, r.json()["error"]["type"]))
            if r.status == 503:
                assert r.headers["retry-after"] == "3"
        # 0.4 s attempt, then a retry cut by the 0.6 s deadline: 504 deadline_exceeded; after two
        # such requests (4 failures) the breaker is open, and the 503 comes without waiting
        assert statuses[0] == (504, "deadline_exceeded")
        assert statuses[-1] == (503, "upstream_unavailable")
        # once open, the 503 comes without waiting: the request does not even reach the hole
        reached = (hole.accepted, hole.bytes_up)
        fast = await timed_rag(client, q="still down?", k=K)
        assert fast.status == 503 and fast.json()["error"]["type"] == "upstream_unavailable"
        assert (hole.accepted, hole.bytes_up) == reached
        assert await metric(client, "rag_circuit_breaker_state", dependency=which) == 2
        assert reranker.count == 0
