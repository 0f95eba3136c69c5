"""Redis killed (then restarted) and Redis frozen (SIGSTOP, CLIENT PAUSE) under a light load:
zero 5xx, every answer within the deadline, the cache bypassed while Redis is away and hits
again once it is back. And a command cancelled mid-flight never leaves a connection out of sync.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from support.prom import metric

from app.clients.cache import RerankCache
from app.clients.redis_client import RedisUnavailable
from app.resilience import BreakerConfig, CircuitBreaker
from app.settings import RedisSettings

from .support import SLACK_S, queries, timed_rag

DEADLINE_S = 1.0
K = 10


@dataclass
class Shot:
    started: float
    ended: float
    status: int
    cache: str | None
    answer: str | None = None  # X-Answer-Cache


class Load:
    """Two clients sending /rag over a few repeated queries (so that most can be cache hits),
    paced so that the whole test sends tens of requests, not thousands."""

    def __init__(
        self, client: httpx.AsyncClient, qs: list[str], workers: int = 2, pace_s: float = 0.05
    ) -> None:
        self.client, self.qs, self.pace_s = client, qs, pace_s
        self.shots: list[Shot] = []
        self._stop = asyncio.Event()
        self._tasks = [asyncio.ensure_future(self._run(w)) for w in range(workers)]

    async def _run(self, w: int) -> None:
        i = w
        while not self._stop.is_set():
            r = await timed_rag(self.client, q=self.qs[i % len(self.qs)], k=K)
            cache = r.json().get("cache") if r.status == 200 else None
            answer = r.headers.get("X-Answer-Cache")
            self.shots.append(Shot(r.started, r.started + r.elapsed, r.status, cache, answer))
            i += 1
            await asyncio.sleep(self.pace_s)

    async def until(self, cond: Callable[[list[Shot]], bool], timeout: float, what: str) -> float:
        end = time.monotonic() + timeout
        while not cond(self.shots):
            if time.monotonic() > end:
                raise AssertionError(f"not seen within {timeout}s: {what}; shots: {self.shots[-10:]}")
            await asyncio.sleep(0.02)
        return time.monotonic()

    async def stop(self) -> list[Shot]:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        return self.shots


def check_every_answer(shots: list[Shot]) -> None:
    assert shots
    assert [s for s in shots if s.status != 200] == [], "a 5xx (or any non-200) while Redis was away"
    slow = [round(s.ended - s.started, 3) for s in shots if s.ended - s.started > DEADLINE_S + SLACK_S]
    assert slow == [], f"answers past the deadline: {slow}"


def hits_after(t: float) -> Callable[[list[Shot]], bool]:
    return lambda shots: any(s.cache == "hit" and s.started > t for s in shots)


async def run_outage(
    client: httpx.AsyncClient, outage: Callable[[], None], recover: Callable[[], None], away_s: float = 1.5
) -> tuple[list[Shot], float, float, float]:
    """Load; take Redis away; keep loading; bring it back; load until it hits again."""
    load = Load(client, queries(4, "redis"))
    try:
        await load.until(hits_after(0), 20, "cache hits before the outage")
        outage()
        away = time.monotonic()
        await asyncio.sleep(away_s)
        back_from = time.monotonic()
        recover()
        back = time.monotonic()
        recovered = await load.until(hits_after(back), 10, "cache hits after Redis came back")
        await asyncio.sleep(1.0)
    finally:
        shots = await load.stop()
    return shots, away, back_from, recovered


def check_outage(shots: list[Shot], away: float, back_from: float, recovered: float) -> None:
    check_every_answer(shots)
    during = [s for s in shots if s.started > away + 0.01 and s.ended < back_from]
    assert len(during) >= 3
    assert {s.cache for s in during} == {"bypass"}, [s.cache for s in during]
    after = [s for s in shots if s.started >= recovered]
    assert len(after) >= 4
    hit_rate = sum(s.cache == "hit" for s in after) / len(after)
    assert hit_rate >= 0.6, [s.cache for s in after]


async def test_redis_killed_mid_load_then_restarted(
    fault_settings: Any, running_app: Any, redis_server: Any
) -> None:
    settings = fault_settings(server={"deadline_s": DEADLINE_S}, reranker={"kind": "lexical"})
    async with running_app(settings) as (client, _):
        shots, away, back_from, recovered = await run_outage(client, redis_server.kill, redis_server.start)
        check_outage(shots, away, back_from, recovered)
        assert await metric(client, "rag_circuit_breaker_state", dependency="redis") == 0


@pytest.mark.parametrize("how", ["sigstop", "client-pause"])
async def test_redis_frozen_under_load(
    fault_settings: Any, running_app: Any, redis_server: Any, how: str
) -> None:
    settings = fault_settings(server={"deadline_s": DEADLINE_S}, reranker={"kind": "lexical"})
    if how == "sigstop":
        freeze, thaw = redis_server.pause, redis_server.resume
    else:

        def freeze() -> None:
            redis_server.cli("CLIENT", "PAUSE", "1500", "ALL")

        def thaw() -> None:
            pass  # the pause ends by itself

    try:
        async with running_app(settings) as (client, _):
            shots, away, back_from, recovered = await run_outage(client, freeze, thaw, away_s=1.4)
            check_outage(shots, away, back_from, recovered)
    finally:
        redis_server.resume()


@pytest.mark.parametrize("how", ["kill", "sigstop"])
async def test_the_answer_cache_keeps_answering_while_redis_is_away(
    fault_settings: Any, running_app: Any, redis_server: Any, how: str
) -> None:
    """With the answer cache on, Redis (its shared tier and the generation) going away costs no
    answer: the in-process tier goes on answering repeats, and once Redis is back the shared
    tier is used again."""
    settings = fault_settings(
        server={"deadline_s": DEADLINE_S}, reranker={"kind": "lexical"}, answer_cache={"enabled": True}
    )
    if how == "kill":
        outage, recover = redis_server.kill, redis_server.start
    else:
        outage, recover = redis_server.pause, redis_server.resume

    def answer_hits_after(t: float) -> Callable[[list[Shot]], bool]:
        return lambda shots: any(s.answer == "hit" and s.started > t for s in shots)

    try:
        async with running_app(settings) as (client, _):
            load = Load(client, queries(4, "answers"))
            try:
                await load.until(answer_hits_after(0), 20, "answer-cache hits before the outage")
                outage()
                away = time.monotonic()
                await asyncio.sleep(1.5)
                back_from = time.monotonic()
                recover()
                back = time.monotonic()
                await load.until(answer_hits_after(back), 10, "answer-cache hits after Redis came back")
                await asyncio.sleep(0.5)
            finally:
                shots = await load.stop()
            check_every_answer(shots)
            during = [s for s in shots if s.started > away + 0.01 and s.ended < back_from]
            assert len(during) >= 3
            assert any(s.answer == "hit" for s in during), [s.answer for s in during]
            assert await metric(client, "rag_answer_cache_hit_total") > 0
    finally:
        redis_server.resume()


# --- a command cancelled mid-flight -------------------------------------------------------------


async def blocked(redis_url: str, how: str) -> Awaitable[Any]:
    """Block the server for ~0.4 s; returns something to await for the block to be over."""
    other = Redis.from_url(redis_url)
    if how == "debug-sleep":
        task = asyncio.ensure_future(other.execute_command("DEBUG", "SLEEP", "0.4"))
    else:
        await other.execute_command("CLIENT", "PAUSE", "400", "ALL")
        task = asyncio.ensure_future(asyncio.sleep(0.45))
    await asyncio.sleep(0.05)  # the server is stuck now

    async def over() -> None:
        await task
        await other.aclose()

    return over()


@pytest.mark.parametrize("how", ["debug-sleep", "client-pause"])
async def test_a_cancelled_command_leaves_no_connection_out_of_sync(redis_url: str, how: str) -> None:
    # one connection in the pool: every command after the cancelled one reuses the pool's slot
    client = Redis.from_url(redis_url, max_connections=1)
    try:
        for i in range(3):
            await client.set(f"a{i}", f"A{i}")
            await client.set(f"b{i}", f"B{i}")
            done = await blocked(redis_url, how)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.1):
                    await client.get(f"a{i}")  # cancelled while waiting for the reply
            await done
            assert await client.get(f"b{i}") == f"B{i}".encode()  # not A's late reply
            assert await client.get(f"a{i}") == f"A{i}".encode()
    finally:
        await client.aclose()


@pytest.mark.parametrize("how", ["debug-sleep", "client-pause"])
async def test_the_rerank_cache_reads_the_right_scores_after_a_timed_out_get(
    redis_url: str, how: str
) -> None:
    breaker = CircuitBreaker("redis", BreakerConfig(window=100, min_calls=100))
    cache = RerankCache.from_settings(RedisSettings(url=redis_url, timeout_s=0.1, max_connections=1), breaker)
    assert cache is not None
    try:
        await cache.set("rerank:v1:one", [1.0])
        await cache.set("rerank:v1:two", [2.0, 3.0])
        done = await blocked(redis_url, how)
        with pytest.raises(RedisUnavailable):
            await cache.get("rerank:v1:one")
        await done
        assert await cache.get("rerank:v1:two") == [2.0, 3.0]
        assert await cache.get("rerank:v1:one") == [1.0]
    finally:
        await cache.aclose()


async def test_control_a_naive_client_would_read_the_stale_reply(redis_url: str, redis_server: Any) -> None:
    """What the tests above guard against: a connection that is kept after its command was
    cancelled hands the cancelled command's reply to the next one."""
    setter = Redis.from_url(redis_url)
    await setter.mset({"a": "A", "b": "B"})
    await setter.aclose()
    reader, writer = await asyncio.open_connection("127.0.0.1", redis_server.port)

    def get(key: str) -> bytes:
        return f"*2\r\n$3\r\nGET\r\n${len(key)}\r\n{key}\r\n".encode()

    async def reply() -> bytes:
        await reader.readline()  # $1
        return (await reader.readline()).strip()

    try:
        done = await blocked(redis_url, "debug-sleep")
        writer.write(get("a"))
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await reply()
        await done
        writer.write(get("b"))
        assert await reply() == b"A"  # out of sync: b's GET got a's value
    finally:
        writer.close()
