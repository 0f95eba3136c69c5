"""The rerank cache: the key (DESIGN §5), the value encoding, and the real Redis from the
session fixture, including Redis being killed, paused and restarted."""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest
from support.clock import FakeClock

from app.clients.cache import KEY_PREFIX, RerankCache, cache_key, pack, unpack
from app.clients.redis_client import RedisUnavailable
from app.errors import CircuitOpen
from app.ingest import Document, to_payload
from app.resilience import BreakerConfig, BreakerState, CircuitBreaker
from app.settings import RedisSettings
from app.types import Candidate

# --- the key -----------------------------------------------------------------------------


def passages(*texts: str, tenant: str = "t1") -> list[Candidate]:
    """Candidates whose payload is what ingestion writes (content_hash included)."""
    return [
        Candidate(f"id-{i}", 0.5, to_payload(Document(doc_id=f"d{i}", text=t, tenant=tenant)))
        for i, t in enumerate(texts)
    ]


BASE = passages("alpha passage", "beta passage", "gamma passage")


def test_key_is_deterministic_and_prefixed() -> None:
    key = cache_key("rr@1", "t1", "what is alpha", BASE)
    assert key == cache_key(
        "rr@1", "t1", "what is alpha", passages("alpha passage", "beta passage", "gamma passage")
    )
    assert key.startswith(KEY_PREFIX)
    digest = key[len(KEY_PREFIX) :]
    assert len(digest) == 64
    int(digest, 16)


def test_key_is_the_key_earlier_releases_wrote() -> None:
    """Scores cached before an upgrade are found after it: these keys were computed by the
    release that hashed each part in turn."""
    assert cache_key("rr@1", "t1", "what is alpha", BASE) == (
        KEY_PREFIX + "850acf235cd2036973c7a823b4548954a0003f531b70b70e4778e09e0c54cdf1"
    )
    no_hash = [Candidate("p\u00e9", 0.1, {"text": "no hash \u00fc"})]
    assert cache_key("rr@1", "t1", "what is alpha", no_hash) == (
        KEY_PREFIX + "4b132a8ba5246a101f148765971b02d99c127e8a6e844a5364f076bb769009ae"
    )


def test_key_changes_with_every_input() -> None:
    base = cache_key("rr@1", "t1", "what is alpha", BASE)
    changed_hash = [
        BASE[0],
        Candidate(BASE[1].id, 0.5, {**BASE[1].payload, "content_hash": "0" * 16}),
        BASE[2],
    ]
    variants = {
        "reranker id": cache_key("rr@2", "t1", "what is alpha", BASE),
        "tenant": cache_key("rr@1", "t2", "what is alpha", BASE),
        "query": cache_key("rr@1", "t1", "what is beta", BASE),
        "candidate order": cache_key("rr@1", "t1", "what is alpha", [BASE[1], BASE[0], BASE[2]]),
        "candidate ids": cache_key(
            "rr@1", "t1", "what is alpha", [BASE[0], Candidate("id-9", 0.5, BASE[1].payload), BASE[2]]
        ),
        "one candidate fewer": cache_key("rr@1", "t1", "what is alpha", BASE[:2]),
        "content hash": cache_key("rr@1", "t1", "what is alpha", changed_hash),
    }
    for name, key in variants.items():
        assert key != base, name
    assert len(set(variants.values())) == len(variants)


def test_key_ignores_what_does_not_change_the_scores() -> None:
    base = cache_key("rr@1", "t1", "q", BASE)
    rescored = [Candidate(c.id, c.score + 0.1, c.payload) for c in BASE]
    assert cache_key("rr@1", "t1", "q", rescored) == base


def test_reindexing_a_changed_passage_changes_the_key() -> None:
    before = passages("alpha passage", "beta passage")
    after = passages("alpha passage", "beta passage, corrected")
    assert [c.id for c in before] == [c.id for c in after]
    assert before[1].payload["content_hash"] != after[1].payload["content_hash"]
    assert cache_key("rr", "t1", "q", before) != cache_key("rr", "t1", "q", after)
    # an unchanged re-index keeps the key (and the cached scores)
    assert cache_key("rr", "t1", "q", before) == cache_key(
        "rr", "t1", "q", passages("alpha passage", "beta passage")
    )


def test_key_parts_cannot_run_into_each_other() -> None:
    assert cache_key("rr", "t1", "ab", BASE) != cache_key("rr", "t1a", "b", BASE)
    assert cache_key("r", "rt1", "q", BASE) != cache_key("rr", "t1", "q", BASE)


# --- the value ---------------------------------------------------------------------------


def bits(values: list[float]) -> list[bytes]:
    return [struct.pack("<d", v) for v in values]


def test_pack_unpack_round_trip_is_bit_exact() -> None:
    values = [0.1, 1 / 3, -0.0, 0.0, 1e-300, 5e-324, 1.7976931348623157e308, -2.5, math.pi, 0.1 + 0.2]
    data = pack(values)
    assert len(data) == 8 * len(values)
    back = unpack(data)
    assert bits(back) == bits(values)
    assert unpack(pack([])) == []


def test_unpack_refuses_a_truncated_value() -> None:
    with pytest.raises(ValueError, match="float64"):
        unpack(pack([1.0, 2.0])[:-1])


# --- against the real Redis --------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def breaker(clock: FakeClock) -> CircuitBreaker:
    # the lifespan's Redis breaker: opens after 3 calls with half of them failed, 1 s open
    return CircuitBreaker(
        "redis",
        BreakerConfig(window=10, min_calls=3, failure_rate=0.5, open_s=1.0, half_open_permits=1),
        clock=clock,
    )


@pytest.fixture
async def cache(redis_url: str, breaker: CircuitBreaker) -> AsyncIterator[RerankCache]:
    c = RerankCache.from_settings(
        RedisSettings(url=redis_url, timeout_s=0.2, connect_timeout_s=0.2, ttl_s=120), breaker
    )
    assert c is not None
    try:
        yield c
    finally:
        await c.aclose()


def connections_received(redis_server: Any) -> int:
    info = redis_server.cli("INFO", "stats")
    line = next(x for x in info.splitlines() if x.startswith("total_connections_received:"))
    return int(line.split(":")[1])


async def test_set_get_round_trip_with_ttl(cache: RerankCache, redis: Any) -> None:
    key = cache_key("rr", "t1", "q", BASE)
    assert await cache.get(key) is None
    scores = [0.91, -1.5, 1 / 3]
    await cache.set(key, scores)
    assert await cache.get(key) == scores
    assert bits(await cache.get(key) or []) == bits(scores)
    ttl = int(redis.cli("TTL", key))
    assert 0 < ttl <= 120
    assert int(redis.cli("STRLEN", key)) == 8 * len(scores)
    await cache.ping()
    assert cache.breaker.state is BreakerState.CLOSED


async def test_a_corrupt_value_is_a_miss(cache: RerankCache, redis: Any) -> None:
    key = cache_key("rr", "t1", "q", BASE)
    redis.cli("SET", key, "not-floats")  # 10 bytes: not a float64 array
    assert await cache.get(key) is None
    # the next good write replaces it
    await cache.set(key, [1.0, 2.0, 3.0])
    assert await cache.get(key) == [1.0, 2.0, 3.0]
    assert cache.breaker.state is BreakerState.CLOSED


async def test_killed_redis_fails_fast_then_the_breaker_stops_trying(
    cache: RerankCache, redis: Any, clock: FakeClock
) -> None:
    key = cache_key("rr", "t1", "q", BASE)
    await cache.ping()  # connected once, so the pool holds a connection that is about to die
    redis.kill()

    # each failure is a RedisUnavailable from Redis itself, bounded (the guard only stops a
    # hang); the window [ok, fail, fail] reaches min_calls=3 and the 50% failure rate
    for state_after in (BreakerState.CLOSED, BreakerState.OPEN):
        with pytest.raises(RedisUnavailable) as err:
            await asyncio.wait_for(cache.get(key), timeout=5)
        assert not isinstance(err.value.__cause__, CircuitOpen)
        assert cache.breaker.state is state_after

    # Redis is back, but the breaker is open: no connection is even attempted
    redis.start()
    before = connections_received(redis)
    for _ in range(5):
        with pytest.raises(RedisUnavailable) as err:
            await cache.get(key)
        assert isinstance(err.value.__cause__, CircuitOpen)
    with pytest.raises(RedisUnavailable):
        await cache.set(key, [1.0, 2.0, 3.0])
    assert connections_received(redis) == before + 1  # the INFO call itself

    # just before the open time it still refuses; at it, one trial goes through and closes it
    clock.now += 0.999
    assert cache.breaker.state is BreakerState.OPEN
    clock.now += 0.001
    assert cache.breaker.state is BreakerState.HALF_OPEN
    assert await cache.get(key) is None  # a restarted Redis without persistence: a miss
    assert cache.breaker.state is BreakerState.CLOSED
    await cache.set(key, [1.0, 2.0, 3.0])
    assert await cache.get(key) == [1.0, 2.0, 3.0]


async def test_paused_redis_is_bounded_by_the_timeout(cache: RerankCache, redis: Any) -> None:
    key = cache_key("rr", "t1", "q", BASE)
    await cache.set(key, [0.5, 0.25, 0.125])
    redis.pause()
    try:
        with pytest.raises(RedisUnavailable) as err:
            await asyncio.wait_for(cache.get(key), timeout=5)
        assert isinstance(err.value.__cause__, TimeoutError)
    finally:
        redis.resume()
    assert cache.breaker.state is BreakerState.CLOSED  # [ok, fail]: below min_calls
    # the timed-out command's reply must never be read as the next command's answer
    assert await cache.get("rerank:v1:absent") is None
    assert await cache.get(key) == [0.5, 0.25, 0.125]


async def test_no_url_means_no_cache(breaker: CircuitBreaker) -> None:
    assert RerankCache.from_settings(RedisSettings(url=None), breaker) is None
    assert RerankCache.from_settings(RedisSettings(url=""), breaker) is None
