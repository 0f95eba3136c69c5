"""Concurrent lookups share reads of the answer-cache generation, and sharing must never cost a
request a write: every request sees the generation of every write that returned before it
arrived, whatever the interleaving of arrivals, writes elsewhere and Redis replies.

Redis here is a stand-in whose replies the test releases one by one (a real server answers too
fast to hold a read in flight at a chosen moment); each GET answers the counter as it was when
the GET was sent, as Redis does."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st

from app.answer_cache import AnswerCache
from app.clients.redis_client import RedisClient, RedisUnavailable


class HeldReplies:
    """The generation (a counter here: its order is what the test checks; the gateway's values
    are random tokens), with each read's reply held until the test releases it."""

    def __init__(self) -> None:
        self.counter = 0
        self.held: list[asyncio.Event] = []
        self.gets = 0
        self.client = self  # scripts are registered on the library client

    def register_script(self, text: str) -> Callable[..., Awaitable[bytes]]:
        async def current_generation(keys: list[str], args: list[str]) -> bytes:
            return await self.get(keys[0])

        return current_generation

    async def call(self, op: Callable[[Any], Awaitable[Any]], bound_s: float | None = None) -> Any:
        return await op(self)

    async def get(self, key: str) -> bytes:
        value = self.counter  # what the server holds when the command reaches it
        self.gets += 1
        gate = asyncio.Event()
        self.held.append(gate)
        await gate.wait()
        return str(value).encode()

    async def incr(self, key: str) -> int:
        self.counter += 1
        return self.counter


STEPS = st.lists(st.sampled_from(["arrive", "write", "reply", "tick"]), min_size=1, max_size=80)


@settings(max_examples=300, deadline=None)
@given(steps=STEPS)
def test_no_request_sees_a_generation_from_before_it_arrived(steps: list[str]) -> None:
    async def scenario() -> tuple[int, int]:
        redis = HeldReplies()
        cache = AnswerCache(cast(RedisClient, redis), "c", max_bytes=1000, ttl_s=60, local_ttl_s=5)
        asked: list[tuple[int, asyncio.Task[Any]]] = []
        for step in steps:
            if step == "arrive":
                asked.append((redis.counter, asyncio.create_task(cache.generation())))
            elif step == "write":  # a write through another replica returned
                redis.counter += 1
            elif step == "reply" and redis.held:
                redis.held.pop(0).set()
            await asyncio.sleep(0)
        while not all(task.done() for _, task in asked):
            for gate in redis.held:
                gate.set()
            await asyncio.sleep(0)
        for arrived_at, task in asked:
            generation = task.result()
            assert generation.shared
            assert int(generation.value[1:]) >= arrived_at
        return redis.gets, len(asked)

    gets, requests = asyncio.run(scenario())
    assert gets <= requests


def test_concurrent_requests_share_one_read() -> None:
    async def scenario() -> int:
        redis = HeldReplies()
        cache = AnswerCache(cast(RedisClient, redis), "c", max_bytes=1000, ttl_s=60, local_ttl_s=5)
        first = asyncio.create_task(cache.generation())
        await asyncio.sleep(0)  # its read is sent and held
        later = [asyncio.create_task(cache.generation()) for _ in range(10)]
        await asyncio.sleep(0)
        while not all(t.done() for t in [first, *later]):
            for gate in redis.held:
                gate.set()
            await asyncio.sleep(0)
        return redis.gets

    assert asyncio.run(scenario()) == 2  # one read for the first, one for the ten after it


class Flaky:
    """A Redis whose calls fail while `down`, and whose SET replies wait for `release`."""

    def __init__(self) -> None:
        self.down = False
        self.value = b"t0"
        self.sets = 0
        self.release = asyncio.Event()
        self.release.set()
        self.client = self

    async def call(self, op: Callable[[Any], Awaitable[Any]], bound_s: float | None = None) -> Any:
        if self.down:
            raise RedisUnavailable("redis", "down")
        return await op(self)

    async def get(self, key: str) -> bytes:
        return self.value

    async def set(self, key: str, value: str) -> bool:
        self.sets += 1
        self.value = value.encode()
        await self.release.wait()
        return True

    def register_script(self, text: str) -> Callable[..., Awaitable[bytes]]:
        async def current_generation(keys: list[str], args: list[str]) -> bytes:
            return self.value

        return current_generation


def test_a_bump_that_fails_while_a_pending_one_is_sent_is_not_forgotten() -> None:
    """A write whose shared bump failed is owed a new shared generation; if another write's bump
    fails while that debt is being paid, the debt stays, and the next read pays it."""

    async def scenario() -> int:
        redis = Flaky()
        cache = AnswerCache(cast(RedisClient, redis), "c", max_bytes=1000, ttl_s=60, local_ttl_s=5)
        redis.down = True
        await cache.bump()  # write 1: owed
        redis.down = False
        redis.release.clear()
        paying = asyncio.create_task(cache.generation())  # sends write 1's new generation
        while redis.sets == 0:
            await asyncio.sleep(0)
        redis.down = True
        await cache.bump()  # write 2 returns while that SET is in flight: owed too
        redis.down = False
        redis.release.set()
        await paying
        before = redis.sets
        await cache.generation()  # write 2's debt is paid before the shared tier is used
        return redis.sets - before

    assert asyncio.run(scenario()) == 1
