"""The whole-answer cache with a real Redis: two tiers, generations shared by replicas, TTLs on
an injected clock, byte bounds, Redis killed (local generation, the pending shared bump applied
once it is back), single flight."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from support.clock import FakeClock

from app.answer_cache import AnswerCache, answer_key, join_answer, split_answer
from app.clients.redis_client import RedisClient
from app.resilience import BreakerConfig, CircuitBreaker
from app.settings import RedisSettings


def client(url: str) -> RedisClient:
    breaker = CircuitBreaker("redis", BreakerConfig(window=1, min_calls=1, open_s=0.001))
    c = RedisClient.from_settings(RedisSettings(url=url, timeout_s=0.5), breaker)
    assert c is not None
    return c


@pytest.fixture
async def pair(redis_url: str, redis: Any) -> AsyncIterator[tuple[AnswerCache, AnswerCache, FakeClock]]:
    """Two replicas' caches on one Redis, one collection name unique to the test."""
    clock = FakeClock()
    name = f"c{id(clock)}"
    a = AnswerCache(client(redis_url), name, max_bytes=64_000, ttl_s=60, local_ttl_s=5, clock=clock)
    b = AnswerCache(client(redis_url), name, max_bytes=64_000, ttl_s=60, local_ttl_s=5, clock=clock)
    yield a, b, clock
    for c in (a, b):
        assert c.redis is not None
        await c.redis.aclose()


def body(rid: str, results: list[str]) -> bytes:
    return orjson.dumps({"request_id": rid, "results": results, "cache": "miss"})


def test_an_answer_is_stored_without_its_request_id_and_served_with_the_hits_own() -> None:
    rest = split_answer(body("req-1", ["a", "b"]), "req-1")
    assert b"req-1" not in rest
    assert orjson.loads(join_answer("req-2", rest)) == {
        "request_id": "req-2",
        "results": ["a", "b"],
        "cache": "miss",
    }
    # a client's request id may hold quotes and backslashes: never a broken or shifted answer
    hostile = 'x"\\y\\"z'
    rest = split_answer(body(hostile, ["c"]), hostile)
    assert orjson.loads(join_answer(hostile, rest)) == {
        "request_id": hostile,
        "results": ["c"],
        "cache": "miss",
    }
    assert orjson.loads(join_answer("plain", rest))["results"] == ["c"]
    with pytest.raises(ValueError, match="starts with its request_id"):
        split_answer(b'{"results": []}', "req-1")
    with pytest.raises(ValueError, match="starts with its request_id"):
        split_answer(body("req-1", []), "req-2")


def test_the_key_covers_generation_identity_tenant_and_request() -> None:
    base = ("s1", "emb|rr|coll", "t1", b'{"q":"x","k":50}')
    keys = {
        answer_key(*base),
        answer_key("s2", *base[1:]),
        answer_key(base[0], "emb2|rr|coll", *base[2:]),
        answer_key(*base[:2], "t2", base[3]),
        answer_key(*base[:3], b'{"q":"x","k":51}'),
    }
    assert len(keys) == 5


async def test_a_write_through_one_replica_changes_the_others_next_key(
    pair: tuple[AnswerCache, AnswerCache, FakeClock],
) -> None:
    a, b, _ = pair
    gen = await a.generation()
    assert gen.shared
    key = answer_key(gen.value, "id", "t1", b"req")
    await a.put(key, b',"results":[1]}', gen)
    assert await b.get(key) == b',"results":[1]}'  # from Redis: shared by replicas

    await a.bump()
    gen_b = await b.generation()
    assert gen_b.value != gen.value
    assert await b.get(answer_key(gen_b.value, "id", "t1", b"req")) is None  # the very next request misses


async def test_an_answer_under_two_keys_reaches_redis_under_both_in_one_round_trip(
    pair: tuple[AnswerCache, AnswerCache, FakeClock], redis_server: Any
) -> None:
    """The handler stores a computed answer under its canonical and its raw key: one round trip
    (one pipeline of two SETs), each key with the cache's TTL, both readable by another replica."""
    a, b, _ = pair
    gen = await a.generation()
    k1, k2 = answer_key(gen.value, "id", "t1", b"canonical"), answer_key(gen.value, "id", "t1", b"raw")
    assert a.redis is not None
    calls = 0
    call = a.redis.call

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return await call(*args, **kwargs)

    a.redis.call = counted  # type: ignore[method-assign]
    redis_server.cli("CONFIG", "RESETSTAT")
    await a.put([k1, k2], b',"results":[2]}', gen)
    assert calls == 1
    stats = redis_server.cli("INFO", "commandstats")
    assert "cmdstat_set:calls=2," in stats, stats
    assert await b.get(k1) == await b.get(k2) == b',"results":[2]}'
    assert 0 < int(redis_server.cli("TTL", k1)) <= 60 and 0 < int(redis_server.cli("TTL", k2)) <= 60


@pytest.mark.parametrize("loss", ["restarted empty", "key evicted"])
async def test_a_generation_lost_by_redis_never_brings_back_an_answer_from_before_a_write(
    pair: tuple[AnswerCache, AnswerCache, FakeClock], redis_server: Any, loss: str
) -> None:
    """b keeps an answer in its in-process tier; a write goes through a; then Redis loses the
    generation (FLUSHALL, or the key evicted): b's next key is a new one, not the one from before
    the write (a counter would have started again where b's old answer was cached)."""
    a, b, _ = pair
    gen = await b.generation()
    key = answer_key(gen.value, "id", "t1", b"req")
    await b.put(key, b',"results":["before the write"]}', gen)
    await a.bump()
    if loss == "restarted empty":
        redis_server.cli("FLUSHALL")
    else:
        for k in redis_server.cli("KEYS", "answer:gen:*").split():
            redis_server.cli("DEL", k)
    after = await b.generation()
    assert after.shared and after.value != gen.value
    assert await b.get(answer_key(after.value, "id", "t1", b"req")) is None
    assert (await a.generation()).value == after.value  # one new generation, shared


async def test_local_tier_ttl_and_byte_bound(redis_url: str, redis: Any) -> None:
    clock = FakeClock()
    cache = AnswerCache(None, "local-only", max_bytes=8_000, ttl_s=60, local_ttl_s=5, clock=clock)
    gen = await cache.generation()
    assert not gen.shared and gen.value == "l0"
    await cache.put("k1", b"x" * 100, gen)
    clock.now += 4.999
    assert await cache.get("k1") == b"x" * 100
    clock.now += 0.001
    assert await cache.get("k1") is None  # without a shared generation: local_ttl_s at most

    for i in range(100):  # 100 entries of ~300 bytes into 8,000 bytes: the oldest go
        await cache.put(f"n{i}", b"y" * 100, gen)
    assert await cache.get("n99") is not None and await cache.get("n0") is None
    await cache.put("huge", b"z" * 2000, gen)  # over an eighth of the cache: not kept
    assert await cache.get("huge") is None

    await cache.bump()
    assert (await cache.generation()).value == "l1"


async def test_an_answer_under_two_keys_is_held_and_counted_once_in_process() -> None:
    """The canonical and the raw key of one answer: the in-process tier holds the bytes under
    the first and a small pointer under the second, so its byte bound counts the answer once;
    the second key lives and expires with the first."""
    clock = FakeClock()
    cache = AnswerCache(None, "alias", max_bytes=8_000, ttl_s=60, local_ttl_s=5, clock=clock)
    gen = await cache.generation()
    # six answers of 900 bytes: 6 x 1,100 + 6 pointers x 200 = 7,800 counted bytes, within 8,000
    # (counted once per key, they would be 13,200, and the oldest would go)
    answers = {i: bytes([65 + i]) * 900 for i in range(6)}
    for i, rest in answers.items():
        await cache.put([f"c{i}", f"r{i}"], rest, gen)
    for i, rest in answers.items():
        assert await cache.get(f"r{i}") == rest and await cache.get(f"c{i}") == rest
    # a seventh pushes out the least recently used answer (c0) and its pointer
    await cache.put(["c6", "r6"], b"G" * 900, gen)
    assert await cache.get("r0") is None and await cache.get("c0") is None
    assert await cache.get("r6") == b"G" * 900
    clock.now += 5  # the local generation's lifetime: both keys of an answer expire together
    assert await cache.get("r5") is None and await cache.get("c5") is None
    assert await cache.get("c4") is None and await cache.get("r4") is None  # (its answer gone first)
    assert "r4" not in cache._entries and "r5" not in cache._entries  # no pointer left behind


async def test_redis_killed_then_back_the_local_write_is_bumped_before_the_shared_tier_is_used(
    pair: tuple[AnswerCache, AnswerCache, FakeClock], redis: Any
) -> None:
    a, b, clock = pair
    before = await a.generation()
    key = answer_key(before.value, "id", "t1", b"req")
    await b.put(key, b',"old":1}', before)

    redis.kill()
    down = await a.generation()
    assert not down.shared
    await a.bump()  # a write while Redis is down: local only, the shared bump is pending
    assert await a.get(key) is None  # the local tier was cleared; Redis is not reachable
    redis.start()
    await asyncio.sleep(0.01)  # the breaker's 1 ms open time
    clock.now += 1
    after = await a.generation()
    assert after.shared and after.value != before.value  # pending bump applied first
    # every replica sees it (b's pooled connection died with Redis: its first call may fail
    # and make it fall back to its own generation once)
    for _ in range(3):
        seen = await b.generation()
        if seen.shared:
            break
        await asyncio.sleep(0.01)
    assert seen.value == after.value


async def test_single_flight_computes_once_and_never_shares_an_uncacheable_answer() -> None:
    cache = AnswerCache(None, "sf", max_bytes=8_000, ttl_s=60, local_ttl_s=5)
    calls = 0
    gate = asyncio.Event()

    async def compute() -> tuple[bytes | None, str]:
        nonlocal calls
        calls += 1
        await gate.wait()
        return b',"r":1}', "own"

    tasks = [asyncio.ensure_future(cache.single_flight("k", compute)) for _ in range(10)]
    await asyncio.sleep(0)
    gate.set()
    # the first computed it (and has its own result); the others got the shared answer
    assert await asyncio.gather(*tasks) == [(b',"r":1}', "own")] + [(b',"r":1}', None)] * 9
    assert calls == 1

    calls = 0

    async def degraded() -> tuple[bytes | None, str]:
        nonlocal calls
        calls += 1
        mine = calls
        await asyncio.sleep(0)
        return None, f"own-{mine}"

    out = await asyncio.gather(*(cache.single_flight("d", degraded) for _ in range(5)))
    assert sorted(own for _, own in out) == [f"own-{i}" for i in range(1, 6)]  # type: ignore[type-var]
    assert calls == 5  # each waiter computed its own: a degraded answer is never shared
