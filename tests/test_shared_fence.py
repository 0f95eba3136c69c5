"""The write fence shared by replicas through Redis (app/clients/vectorstore/fence.py), on a real
redis-server: several stores stand for replicas of one Qdrant server collection, each with its
own SharedFence, as the gateway wires them."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.asyncio import Redis
from support.redis import RedisServer

from app.clients.redis_client import RedisUnavailable
from app.clients.vectorstore.fence import FenceLost, Registered, SharedFence
from app.clients.vectorstore.fence_lua import ACQUIRE
from app.clients.vectorstore.swap import SwappableStore
from app.settings import RedisSettings

EPOCH = "fence:c:epoch"


class NoStore:
    """What a SwappableStore needs of a store to fence writes: nothing is written here."""

    collection = "c"

    async def aclose(self) -> None:
        return None


@dataclass
class Replica:
    store: SwappableStore
    fence: SharedFence
    redis: Redis  # the test's own client, to look at the keys
    follows: int = 0

    async def follow(self) -> None:  # what the Follower does: read the alias, maybe swap
        self.follows += 1
        await asyncio.sleep(0.001)


@pytest.fixture
async def replicas(redis_url: str) -> AsyncIterator[Any]:
    made: list[Replica] = []

    def make(lease_s: float = 5.0, follow: bool = True) -> Replica:
        # the Redis settings' defaults (a 100 ms timeout for the caches): the fence has its own
        fence = SharedFence.from_settings(RedisSettings(url=redis_url), "c", lease_s)
        store = SwappableStore(NoStore())  # type: ignore[arg-type]
        store.fence = fence
        r = Replica(store, fence, Redis.from_url(redis_url))
        if follow:
            fence.on_epoch = r.follow
        made.append(r)
        return r

    yield make
    for r in made:
        await r.fence.aclose()
        await r.redis.aclose()


@dataclass
class Seen:
    writes: int = 0  # writes inside now, on any replica
    holders: int = 0
    done_writes: int = 0
    done_holds: int = 0
    broken: list[str] = field(default_factory=list)


async def test_no_write_on_any_replica_runs_while_one_holds_the_fence(replicas: Any) -> None:
    """Random interleavings of writes and fences on three replicas: a fence is entered only when
    no write runs anywhere, one fence at a time, and a write runs only at the epoch its replica
    has followed (every fence taken since was followed before the write began), or one later
    while a fence taken after it began waits for it."""
    group = [replicas() for _ in range(3)]
    seen = Seen()
    rng = random.Random(11)
    stop = asyncio.Event()

    async def writer(r: Replica, seed: int) -> None:
        rnd = random.Random(seed)
        while not stop.is_set():
            async with r.store.writing():
                seen.writes += 1
                if seen.holders:
                    seen.broken.append("a write began inside a fence")
                async with r.redis.pipeline(transaction=True) as tx:  # one moment of both
                    epoch, held = await tx.get(EPOCH).exists("fence:c:holder").execute()
                now, followed = int(epoch or 0), int(r.fence.seen or 0)
                # the epoch it followed, or one more: a fence taken since, whose holder waits
                if not (now == followed or (now == followed + 1 and held)):
                    seen.broken.append(f"a write at epoch {now} after following {followed}")
                await asyncio.sleep(rnd.uniform(0, 0.01))
                if seen.holders:
                    seen.broken.append("a fence was entered during a write")
                seen.writes -= 1
                seen.done_writes += 1
            await asyncio.sleep(rnd.uniform(0, 0.005))

    async def holder(r: Replica, seed: int) -> None:
        rnd = random.Random(seed)
        while not stop.is_set():
            await asyncio.sleep(rnd.uniform(0.01, 0.05))
            async with r.store.exclusive() as held:
                assert held is not None
                seen.holders += 1
                if seen.holders > 1 or seen.writes:
                    seen.broken.append(f"fence entered with {seen.holders} holders, {seen.writes} writes")
                await asyncio.sleep(rnd.uniform(0, 0.02))
                held.check()
                seen.holders -= 1
                seen.done_holds += 1

    tasks = [asyncio.create_task(writer(r, rng.random())) for r in group for _ in range(5)]
    tasks += [asyncio.create_task(holder(r, rng.random())) for r in group]
    await asyncio.sleep(3.0)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert seen.broken == [], seen.broken[:5]
    assert seen.done_writes > 100 and seen.done_holds > 10, seen  # both sides made progress
    assert all(r.follows >= 1 for r in group)
    assert await group[0].redis.zcard("fence:c:writers") == 0  # nothing left behind


async def test_a_fence_waits_for_a_write_registered_on_another_replica(replicas: Any) -> None:
    a, b = replicas(), replicas()
    w, release = await _write_in_flight(b.store)
    hold = asyncio.create_task(_enter_and_leave(a.store))
    await asyncio.sleep(0.3)
    assert not hold.done()  # the other replica's write is in flight
    release.set()
    await asyncio.wait_for(asyncio.gather(w, hold), 10)


async def _write_in_flight(store: SwappableStore) -> tuple[asyncio.Task[None], asyncio.Event]:
    """A write that has registered and runs until the event is set."""
    entered, release = asyncio.Event(), asyncio.Event()

    async def write() -> None:
        async with store.writing():
            entered.set()
            await release.wait()

    w = asyncio.create_task(write())
    await entered.wait()
    return w, release


async def _enter_and_leave(store: SwappableStore) -> None:
    async with store.exclusive():
        pass


async def test_a_write_on_another_replica_waits_for_the_fence_then_follows(replicas: Any) -> None:
    a, b = replicas(), replicas()
    async with b.store.writing():  # b has followed the epoch it started at
        pass
    follows = b.follows
    done = asyncio.Event()

    async def write() -> None:
        async with b.store.writing():
            done.set()

    async with a.store.exclusive():
        w = asyncio.create_task(write())
        await asyncio.sleep(0.3)
        assert not done.is_set()  # held while a's fence is up
    await asyncio.wait_for(w, 10)
    assert b.follows == follows + 1  # a's release may have switched the collection: followed first


async def test_a_dead_replicas_write_and_fence_run_out_after_their_lease(
    replicas: Any, redis_server: RedisServer
) -> None:
    a, b = replicas(lease_s=3.0), replicas(lease_s=3.0, follow=False)
    reg = await b.fence.register()  # b dies with this write registered: nobody removes it
    assert isinstance(reg, Registered), reg
    hold = asyncio.create_task(_enter_and_leave(a.store))
    await asyncio.sleep(0.5)
    assert not hold.done()
    await asyncio.wait_for(hold, 15)  # its registration ran out

    c = replicas(lease_s=3.0)
    await _write(c.store)
    follows = c.follows
    # a replica takes the fence (say for a model switch) and dies before it lets go
    assert redis_server.cli("EVAL", ACQUIRE, "2", "fence:c:holder", EPOCH, "dead", "3000") == "1"
    write = asyncio.create_task(_write(c.store))
    await asyncio.sleep(0.5)
    assert not write.done()
    await asyncio.wait_for(write, 15)  # the dead holder's lease ran out
    assert c.follows == follows + 1  # and the write followed whatever it may have switched


async def _write(store: SwappableStore) -> None:
    async with store.writing():
        pass


async def test_a_holder_whose_lease_ran_out_is_told_before_it_commits(
    replicas: Any, redis_server: RedisServer
) -> None:
    a = replicas(lease_s=1.0)
    async with a.store.exclusive() as held:
        assert held is not None
        held.check()
        redis_server.pause()  # no renewal lands: the lease runs out
        try:
            await asyncio.sleep(1.2)
        finally:
            redis_server.resume()
        with pytest.raises(FenceLost):
            held.check()
    b = replicas(lease_s=1.0)
    await asyncio.wait_for(_write(b.store), 10)  # and the fence is gone


async def test_a_fence_taken_over_after_its_lease_is_not_the_old_holders(
    replicas: Any, redis_server: RedisServer
) -> None:
    a = replicas(lease_s=1.0)
    async with a.store.exclusive() as held:
        assert held is not None
        # its lease ran out unnoticed and another replica took the fence
        redis_server.cli("SET", "fence:c:holder", "another-replica 99999999999999")
        await asyncio.sleep(0.6)  # a renewal finds the token is not its own
        with pytest.raises(FenceLost):
            held.check()
    assert redis_server.cli("GET", "fence:c:holder").startswith("another-replica ")  # left to it


async def test_an_earlier_gateways_fence_holds_writes_during_a_rolling_upgrade(
    replicas: Any, redis_server: RedisServer
) -> None:
    """Gateways before the fence's values held their expiry set a bare token with a TTL."""
    a = replicas()
    redis_server.cli("SET", "fence:c:holder", "an-older-gateway", "PX", "5000")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(_write(a.store), 0.5)  # held by it
    await asyncio.wait_for(_write(a.store), 15)  # until its key's own TTL ends it


async def test_with_redis_unreachable_no_write_and_no_fence_is_taken(
    replicas: Any, redis_server: RedisServer
) -> None:
    a = replicas()
    redis_server.kill()
    with pytest.raises(RedisUnavailable):
        await _write(a.store)
    with pytest.raises(RedisUnavailable):
        await _enter_and_leave(a.store)
    redis_server.start()
    for _ in range(100):  # the breaker lets a call through again after its open time
        try:
            await _write(a.store)
            break
        except RedisUnavailable:
            await asyncio.sleep(0.1)
    else:
        pytest.fail("writes did not resume once Redis was back")
    await _enter_and_leave(a.store)


async def test_a_slow_redis_holds_a_write_back_rather_than_failing_it(
    replicas: Any, redis_server: RedisServer
) -> None:
    """Redis busy for longer than the caches' 100 ms timeout: a write waits for it (the fence's
    own bound), and leaves no registration behind."""
    a = replicas()
    await _write(a.store)
    blocker = Redis.from_url(redis_server.url)
    try:
        busy = asyncio.create_task(blocker.execute_command("DEBUG", "SLEEP", "0.5"))
        await asyncio.sleep(0.05)
        await _write(a.store)
        await busy
    finally:
        await blocker.aclose()
    assert await a.redis.zcard("fence:c:writers") == 0


async def test_a_fence_cancelled_while_writes_drain_is_lowered(replicas: Any) -> None:
    a = replicas()
    w, release = await _write_in_flight(a.store)
    hold = asyncio.create_task(_enter_and_leave(a.store))
    await asyncio.sleep(0.1)
    hold.cancel()  # e.g. a job's lease lost while its follower waited to swap
    with pytest.raises(asyncio.CancelledError):
        await hold
    release.set()
    await asyncio.wait_for(w, 10)
    await asyncio.wait_for(_write(a.store), 10)  # not held for good


async def test_a_write_whose_registration_ran_out_fails_once_done(
    replicas: Any, redis_server: RedisServer
) -> None:
    """Redis unreachable for longer than the lease during a write: a holder may have begun
    without it, so the write is reported failed (its client sends it again), not answered."""
    a = replicas(lease_s=1.0)

    async def write_through_an_outage() -> None:
        async with a.store.writing():
            redis_server.pause()
            try:
                await asyncio.sleep(1.5)
            finally:
                redis_server.resume()
            await asyncio.sleep(1.0)  # the next renewal finds the registration gone

    with pytest.raises(FenceLost):
        await write_through_an_outage()
    await asyncio.wait_for(_write(a.store), 10)


async def test_a_patient_write_waits_for_redis_to_come_back(replicas: Any, redis_server: RedisServer) -> None:
    """A job's batch (patience_s) rides out a Redis outage instead of failing its job."""
    a = replicas()
    redis_server.kill()

    async def batch() -> None:
        async with a.store.writing(patience_s=60.0):
            pass

    write = asyncio.create_task(batch())
    await asyncio.sleep(1.0)
    assert not write.done()  # waiting, not failed
    redis_server.start()
    await asyncio.wait_for(write, 30)
    assert await a.redis.zcard("fence:c:writers") == 0


async def test_a_write_whose_renewals_never_land_fails_once_done(replicas: Any) -> None:
    """This replica cannot renew (its Redis calls fail) while another replica reaches Redis: the
    other's fence goes ahead once the registration ran out, and the write is told, not answered."""
    a, b = replicas(lease_s=1.0), replicas(lease_s=1.0)
    await _write(b.store)  # followed the current epoch

    async def unreachable(*_: Any, **__: Any) -> Any:
        raise RedisUnavailable("redis", "timed out")

    b.fence._renew_write = unreachable
    b.fence._finish_write = unreachable  # nor can it learn at the end: its own deadline decides
    entered = asyncio.Event()

    async def hold_when_free() -> None:
        async with a.store.exclusive():
            entered.set()

    async def long_write() -> None:
        async with b.store.writing():
            holder = asyncio.create_task(hold_when_free())
            await asyncio.wait_for(entered.wait(), 10)  # the registration ran out: a went ahead
            await holder

    with pytest.raises(FenceLost):
        await long_write()


async def test_a_registration_whose_reply_was_lost_is_removed(replicas: Any) -> None:
    a, b = replicas(), replicas()
    await _write(b.store)
    run = b.fence._run

    async def reply_lost(script: Any, keys: list[str], args: list[Any]) -> Any:
        await run(script, keys, args)  # it ran in Redis
        raise RedisUnavailable("redis", "timed out reading the reply")

    b.fence._run = reply_lost  # type: ignore[method-assign]
    with pytest.raises(RedisUnavailable):
        await _write(b.store)
    assert await a.redis.zcard("fence:c:writers") == 0
    await asyncio.wait_for(_enter_and_leave(a.store), 2)  # no registration left to wait for


async def test_no_fence_key_can_be_evicted_by_a_volatile_policy(replicas: Any) -> None:
    """The fence's keys carry no TTL (each value holds its own expiry), so Redis under
    `maxmemory-policy volatile-lru` evicts cache entries, never the fence."""
    a, b = replicas(), replicas()
    ttls: list[int] = []
    entered = asyncio.Event()

    async def write() -> None:
        async with b.store.writing():
            entered.set()
            ttls.extend([await a.redis.ttl("fence:c:writers"), await a.redis.ttl(EPOCH)])

    async with a.store.exclusive():
        ttls.append(await a.redis.ttl("fence:c:holder"))
    w = asyncio.create_task(write())
    await entered.wait()
    await w
    assert ttls == [-1, -1, -1], ttls  # present, and no expiry
