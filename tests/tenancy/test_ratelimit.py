"""Per-key rate limits: an exact sliding window in Redis (one Lua script), the same window in
process memory when Redis is gone, 429 with Retry-After and X-RateLimit-* headers, never a 500."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.keys import make_key
from tenancy_support import assert_json_error, auth_settings, corpus, ingest, serve

from app.clients.ratelimit import KEY_PREFIX, RateLimiter
from app.settings import RedisSettings

T0 = 1_700_000_000.0
ADMIN = make_key("admin-rl", "default", admin=True)
FIVE = make_key("five", "default", rate_limit=5)
OTHER = make_key("other", "default", rate_limit=5)
DOWN = make_key("down", "default", rate_limit=5)
FRESH = make_key("fresh", "default", rate_limit=5)
QUERY = {"q": "kubernetes pod keeps restarting", "k": 3, "rerank": False}


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(params=["redis", "local"])
async def limiter(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[tuple[RateLimiter, Clock]]:
    clock = Clock()
    url = redis_url if request.param == "redis" else None
    lim = RateLimiter.from_settings(RedisSettings(url=url, timeout_s=1.0), window_s=10, clock=clock)
    yield lim, clock
    await lim.aclose()


async def test_exact_sliding_window(limiter: tuple[RateLimiter, Clock]) -> None:
    lim, clock = limiter
    source = "redis" if lim.redis is not None else "local"
    seen = []
    for i in range(5):  # at t = 0, 1, 2, 3, 4
        clock.t = T0 + i
        d = await lim.hit("k", 5)
        assert d.source == source
        seen.append((d.allowed, d.remaining, d.headers()["X-RateLimit-Reset"]))
    assert seen == [(True, 4, "10"), (True, 3, "9"), (True, 2, "8"), (True, 1, "7"), (True, 0, "6")]

    clock.t = T0 + 5
    d = await lim.hit("k", 5)
    assert (d.allowed, d.remaining) == (False, 0)
    assert d.headers() == {
        "X-RateLimit-Limit": "5",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": "5",
        "Retry-After": "5",
    }
    clock.t = T0 + 9.999  # the first request is still inside the window
    d = await lim.hit("k", 5)
    assert not d.allowed
    assert d.headers()["Retry-After"] == "1"

    clock.t = T0 + 10  # exactly one window after the first request: one slot is free
    assert (await lim.hit("k", 5)).allowed
    assert not (await lim.hit("k", 5)).allowed  # and only one

    clock.t = T0 + 14.5  # requests at 1..4 have left; the one at 10 is still in
    d = await lim.hit("k", 5)
    assert (d.allowed, d.remaining) == (True, 3)

    # refused requests are not counted, and keys do not share a window
    d = await lim.hit("other-key", 5)
    assert (d.allowed, d.remaining) == (True, 4)


async def test_the_script_survives_a_redis_script_flush(redis_server: Any, redis_url: str) -> None:
    clock = Clock()
    lim = RateLimiter.from_settings(RedisSettings(url=redis_url, timeout_s=1.0), window_s=10, clock=clock)
    try:
        assert (await lim.hit("k", 2)).source == "redis"
        redis_server.cli("SCRIPT", "FLUSH")
        d = await lim.hit("k", 2)
        assert (d.source, d.allowed, d.remaining) == ("redis", True, 0)
        assert redis_server.cli("ZCARD", KEY_PREFIX + "k") == "2"
    finally:
        await lim.aclose()


async def test_unreachable_redis_falls_back_to_the_local_window(redis_server: Any) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    clock = Clock()
    lim = RateLimiter.from_settings(
        RedisSettings(url=f"redis://127.0.0.1:{port}/0"), window_s=10, clock=clock
    )
    try:
        decisions = [await lim.hit("k", 3) for _ in range(4)]
        assert [d.source for d in decisions] == ["local"] * 4
        assert [d.allowed for d in decisions] == [True, True, True, False]
    finally:
        await lim.aclose()


@pytest.fixture
async def gateway(model_dir: Path, redis_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = auth_settings(
        model_dir,
        tmp_path / "qdrant",
        redis_url,
        [ADMIN, FIVE, OTHER, DOWN, FRESH],
        auth={"rate_window_s": 10},
    )
    async with serve(settings) as (client, _):
        await ingest(client, ADMIN, "default", corpus(12))
        yield client


def _limit_headers(r: httpx.Response) -> tuple[str, str, int]:
    return (
        r.headers["x-ratelimit-limit"],
        r.headers["x-ratelimit-remaining"],
        int(r.headers["x-ratelimit-reset"]),
    )


async def test_five_per_window_then_429_with_headers(gateway: httpx.AsyncClient, redis_server: Any) -> None:
    for remaining in ("4", "3", "2", "1", "0"):
        r = await gateway.post("/rag", json=QUERY, headers=FIVE.headers)
        assert r.status_code == 200, r.text
        limit, left, reset = _limit_headers(r)
        assert (limit, left) == ("5", remaining)
        assert 1 <= reset <= 10
        assert "retry-after" not in r.headers
    r = await gateway.post("/rag", json=QUERY, headers=FIVE.headers)
    err = assert_json_error(r, 429, "rate_limited")
    assert "5 requests per 10s" in err["message"]
    limit, left, reset = _limit_headers(r)
    assert (limit, left) == ("5", "0")
    assert 1 <= int(r.headers["retry-after"]) == reset <= 10
    # the window lives in Redis under the key id, never the key itself
    assert redis_server.cli("ZCARD", KEY_PREFIX + FIVE.id) == "5"
    assert FIVE.token not in redis_server.cli("KEYS", "*")

    # another key of the same tenant has its own window
    r = await gateway.post("/rag", json=QUERY, headers=OTHER.headers)
    assert r.status_code == 200 and r.headers["x-ratelimit-remaining"] == "4"
    # invalid requests count too: abuse with bad bodies is still abuse
    r = await gateway.post("/rag", json={"q": ""}, headers=FIVE.headers)
    assert_json_error(r, 429, "rate_limited")


async def test_redis_killed_local_limiter_holds(gateway: httpx.AsyncClient, redis_server: Any) -> None:
    statuses = [(await gateway.post("/rag", json=QUERY, headers=DOWN.headers)).status_code for _ in range(2)]
    redis_server.kill()
    for _ in range(5):
        r = await gateway.post("/rag", json=QUERY, headers=DOWN.headers)
        statuses.append(r.status_code)
        if r.status_code == 200:
            assert r.json()["cache"] == "off"  # rerank false; the request itself is served
    assert statuses == [200, 200, 200, 200, 200, 429, 429]
    assert r.headers["x-ratelimit-limit"] == "5"
    assert 1 <= int(r.headers["retry-after"]) <= 10

    # a key first seen while Redis is down is limited all the same
    fresh = [(await gateway.post("/rag", json=QUERY, headers=FRESH.headers)).status_code for _ in range(7)]
    assert fresh == [200] * 5 + [429] * 2
