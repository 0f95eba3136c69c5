"""The write fence shared by every replica of one Qdrant server collection, kept in Redis (see
docs/ARCHITECTURE.md, "Write fence").

A reindex, a snapshot restore or a rollback holds writes while it runs; the store's own fence
(`SwappableStore`) holds this process's writes, this one every replica's. Keys under
`fence:<collection>:`:
- `holder`: the token of the replica holding the fence and when its lease ends, which it renews;
- `writers`: the writes in progress on every replica, each scored by when its registration runs
  out (Redis's clock), renewed while the write runs, removed when it ends;
- `epoch`: bumped whenever a fence is taken and when it is released, so that a replica's next
  write learns that the serving collection may have been switched under it (even by a holder
  that died before its release), and follows the switch before it embeds.

A write registers (one script: only if no fence is up) before it embeds or writes anything; a
holder sets the fence, then waits until no registration is left. Redis orders the two, so a
write either registered first (the holder waits for it) or sees the fence (and waits for it).
A dead replica's fence or registration runs out after its lease. A holder that could not renew
its lease in time (`Hold.check`) no longer holds anything and must commit nothing; a write whose
registration ran out while it ran (Redis says so when it is removed, or, out of reach, no renewal
landed in time) fails (FenceLost) once it is done, so its client sends it again.
The fence has its own Redis client: every call bounded by CALL_S, not by the rerank cache's short
timeout (the fence has no fallback to fall back on).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from app.clients.redis_client import RedisClient, RedisUnavailable, breaker_config
from app.clients.vectorstore.fence_lua import (
    ACQUIRE,
    FINISH_WRITE,
    PENDING,
    REGISTER,
    RELEASE,
    RENEW_HOLD,
    RENEW_WRITE,
)
from app.errors import DependencyUnavailable
from app.resilience import CircuitBreaker
from app.resilience.tasks import stop_task
from app.settings import RedisSettings

log = logging.getLogger("rag.fence")
MARGIN = 0.2  # share of a lease a holder does not count on (the time its renewal took to land)
POLL_S = 0.05  # how often a held write looks at the fence, and a holder at the writes left
CALL_S = 2.0  # bound on one fence call (connect, send, reply)


class FenceLost(DependencyUnavailable):
    """The shared fence's lease ran out before the holder was done: other replicas may write."""


@dataclass(slots=True)
class Hold:
    """A held shared fence; `check()` before every step that counts on it (a commit)."""

    deadline: float  # monotonic: until then the fence is surely this replica's

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise FenceLost("redis", "the shared write fence's lease ran out; nothing was switched")

    def gone(self) -> None:
        self.deadline = 0.0


@dataclass(slots=True)
class Registered:
    member: str
    deadline: float  # monotonic: until then the registration surely holds (renewals move it)
    lost: bool = False  # found run out or gone by Redis

    def ran_out(self) -> bool:
        return self.lost or time.monotonic() > self.deadline

    def gone(self) -> None:
        self.lost = True


class SharedFence:
    def __init__(self, redis: RedisClient, collection: str, lease_s: float) -> None:
        self._redis, self.lease_s = redis, lease_s
        prefix = f"fence:{collection}:"
        self._holder, self._writers, self._epoch = prefix + "holder", prefix + "writers", prefix + "epoch"
        scripts = redis.client.register_script
        self._register, self._renew_write = scripts(REGISTER), scripts(RENEW_WRITE)
        self._finish_write = scripts(FINISH_WRITE)
        self._pending, self._acquire = scripts(PENDING), scripts(ACQUIRE)
        self._renew_hold, self._release = scripts(RENEW_HOLD), scripts(RELEASE)
        self._me, self._n = secrets.token_hex(8), itertools.count()
        self.seen: str | None = None  # the epoch this replica has followed
        # follows another replica's switch (app/reindex/follow.py); None: epochs are not followed
        self.on_epoch: Callable[[], Awaitable[object]] | None = None
        self._following = asyncio.Lock()

    @classmethod
    def from_settings(cls, s: RedisSettings, collection: str, lease_s: float) -> SharedFence:
        """A fence on a Redis client of its own (its pool, its breaker, CALL_S per call)."""
        own = s.model_copy(
            update={"timeout_s": CALL_S, "connect_timeout_s": min(CALL_S, s.connect_timeout_s)}
        )
        redis = RedisClient.from_settings(own, CircuitBreaker("redis", breaker_config(own)))
        assert redis is not None
        return cls(redis, collection, lease_s)

    async def aclose(self) -> None:
        await self._redis.aclose()

    @property
    def _ttl_ms(self) -> int:
        return max(1, round(self.lease_s * 1000))

    async def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        return await self._redis.call(lambda _: script(keys=keys, args=args))

    # --- writers ------------------------------------------------------------------------------

    async def register(self) -> Registered | str | None:
        """Register one write: Registered, or (nothing registered) None while a fence is up, or
        the epoch to follow first (`wait`). Raises RedisUnavailable: no write is safe then."""
        member = f"{self._me}:{next(self._n)}"
        sent = time.monotonic()
        try:
            ok, epoch = await self._run(
                self._register, [self._holder, self._writers, self._epoch], [member, self._ttl_ms]
            )
        except BaseException:  # the script may have run though its reply was lost: undo it
            await self._unregister(member)
            raise
        if not ok:
            return None
        epoch = epoch.decode() if isinstance(epoch, bytes) else str(epoch)
        if epoch == self.seen or self.on_epoch is None:
            self.seen = epoch
            return Registered(member, sent + self.lease_s * (1 - MARGIN))
        await self._unregister(member)
        return epoch

    async def wait(self, epoch: str | None) -> None:
        """After `register` gave no registration: wait for the fence, or follow the switch."""
        if epoch is None or self.on_epoch is None:
            await asyncio.sleep(POLL_S)
            return
        async with self._following:
            if self.seen != epoch:
                await self.on_epoch()
                self.seen = epoch

    @asynccontextmanager
    async def writing(self, reg: Registered) -> AsyncIterator[None]:
        """The registered write runs inside; its registration is renewed, then removed. Raises
        FenceLost after the write if the registration ran out meanwhile (a holder may have begun
        without waiting for it)."""
        renew = (self._renew_write, [self._writers], [reg.member, self._ttl_ms])
        beat = asyncio.create_task(self._beat(*renew, reg, "a write's registration"), name="fence-write")
        try:
            yield
        finally:
            await stop_task(beat, 2 * CALL_S)
            await self._finish(reg)
        if reg.ran_out():
            raise FenceLost(
                "redis",
                "the write's registration in the shared write fence ran out before it ended: it may"
                " be missing from a collection being rebuilt; send it again",
            )

    async def _beat(
        self, script: Any, keys: list[str], args: list[Any], lease: Registered | Hold, what: str
    ) -> None:
        """Renew `lease` every quarter of it until Redis finds it run out or gone. A renewal
        that lands moves its local deadline: live in Redis when it was sent, so live all along
        (scores only grow, and only run-out ones go)."""
        while True:
            await asyncio.sleep(self.lease_s / 4)
            sent = time.monotonic()
            try:
                if not await self._run(script, keys, args):
                    lease.gone()
                    log.error("shared write fence: a lease ran out while in use", extra={"lease": what})
                    return
            except RedisUnavailable as exc:
                log.warning(
                    "shared write fence: a lease not renewed", extra={"lease": what, "error": exc.message}
                )
                continue
            lease.deadline = sent + self.lease_s * (1 - MARGIN)

    async def _finish(self, reg: Registered) -> None:
        """Remove the registration, learning whether it held to the end (`reg.lost` if not);
        Redis out of reach: the local deadline decides (`ran_out`)."""
        try:
            if not await self._run(self._finish_write, [self._writers], [reg.member]):
                reg.lost = True
            else:
                reg.deadline = float("inf")  # it held to the end
        except RedisUnavailable as exc:  # it runs out after its lease; a holder waits until then
            log.warning("shared write fence: registration not removed", extra={"error": exc.message})

    async def _unregister(self, member: str) -> None:
        try:
            await self._redis.call(lambda r: r.zrem(self._writers, member))
        except RedisUnavailable as exc:  # it runs out after its lease; a holder waits until then
            log.warning("shared write fence: registration not removed", extra={"error": exc.message})

    # --- the holder ---------------------------------------------------------------------------

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[Hold]:
        """Hold every replica's writes: waits for another holder, then for the writes in flight."""
        token = secrets.token_hex(16)
        while True:
            sent = time.monotonic()
            try:
                if await self._run(self._acquire, [self._holder, self._epoch], [token, self._ttl_ms]):
                    break
            except BaseException:  # the fence may be taken though the reply was lost: let it go
                await self._let_go(token)
                raise
            await asyncio.sleep(POLL_S)  # another replica holds it (its lease bounds a dead one)
        held = Hold(sent + self.lease_s * (1 - MARGIN))
        renew = (self._renew_hold, [self._holder], [token, self._ttl_ms])
        beat = asyncio.create_task(self._beat(*renew, held, "the fence's lease"), name="fence-hold")
        try:
            while await self._run(self._pending, [self._writers], []):
                held.check()
                await asyncio.sleep(POLL_S)
            held.check()
            yield held
        finally:
            await stop_task(beat, 2 * CALL_S)
            await self._let_go(token)

    async def _let_go(self, token: str) -> None:
        try:
            await self._run(self._release, [self._holder, self._epoch], [token])
        except RedisUnavailable as exc:  # its lease ends it (taking it bumped the epoch already)
            log.error("shared write fence not released", extra={"error": exc.message})
