"""SwappableStore: the one home of the serving vector store, so that it can be replaced while the
gateway serves (a snapshot restore; a reindex later).

Everything that uses the store (pipeline, documents, jobs, admin views) holds this object; it
passes each call to the store serving now. A request that must see one store from its first call
to its last takes a `lease()`: its calls stay on the store it began with, even across a swap.
`swap()` makes a new store the serving one at once (later requests and calls use it), then waits
until no call and no lease uses the old one and closes it.

Writes go through `writing()` (shared among writers); `exclusive()` waits for every write in
progress and holds new ones back, for a snapshot's copy or a swap (reads go on). With a shared
fence (`fence`, a Qdrant server with Redis: fence.py) both also cover every other replica's writes.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from app.clients.redis_client import RedisUnavailable
from app.clients.vectorstore.base import Vectors
from app.types import Candidate, Filters, PointIn

if TYPE_CHECKING:
    from app.clients.vectorstore import VectorStore
    from app.clients.vectorstore.fence import Hold, SharedFence

T = TypeVar("T")


class Users:
    """How many calls and leases use one store; `idle` is set when none does."""

    def __init__(self) -> None:
        self.count = 0
        self.idle = asyncio.Event()
        self.idle.set()

    def enter(self) -> None:
        self.count += 1
        self.idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self.idle.set()


class SwappableStore:
    """A VectorStore that passes every call to the store serving now (see the module docstring)."""

    def __init__(self, store: VectorStore) -> None:
        self._current = store
        self.collection = store.collection  # a swap never changes it (a restore refuses another)
        self._users: dict[int, Users] = {id(store): Users()}
        self._pinned: contextvars.ContextVar[VectorStore | None] = contextvars.ContextVar(
            "pinned", default=None
        )
        self._writers = 0
        self._no_writers = asyncio.Condition()
        self._fenced = False
        self.generation = 0  # bumped by every swap
        self.fence: SharedFence | None = None  # every replica's writes too (set at start-up)

    @property
    def current(self) -> VectorStore:
        return self._current

    # --- request pinning and swapping ----------------------------------------------------

    @asynccontextmanager
    async def lease(self) -> AsyncIterator[None]:
        """Pin the current store for the calls made inside (one request sees one store)."""
        if self._pinned.get() is not None:
            yield
            return
        store = self._current
        users = self._users[id(store)]
        users.enter()
        token = self._pinned.set(store)
        try:
            yield
        finally:
            self._pinned.reset(token)
            users.leave()

    async def swap(self, new: VectorStore) -> VectorStore:
        """Serve from `new` from now on; close the old store once nothing uses it. Returns it."""
        old = self._current
        self._users.setdefault(id(new), Users())
        self._current = new
        self.generation += 1
        users = self._users[id(old)]
        await users.idle.wait()
        del self._users[id(old)]
        await old.aclose()
        return old

    async def _call(self, fn: Callable[[VectorStore], Awaitable[T]]) -> T:
        store = self._pinned.get() or self._current
        users = self._users[id(store)]
        users.enter()
        try:
            return await fn(store)
        finally:
            users.leave()

    # --- the write fence ------------------------------------------------------------------

    @asynccontextmanager
    async def writing(self, patience_s: float = 0.0) -> AsyncIterator[None]:
        """One write operation (a request's or a job batch's), held while a fence is up: this
        process's, and with a shared fence any replica's (which may first make it follow a switch
        another replica made). Redis out of reach raises RedisUnavailable, at once or, with
        `patience_s`, once it has been out of reach that long (a job's batch waits for it)."""
        give_up, backoff = time.monotonic() + patience_s, 0.0
        while True:
            await self._enter()
            try:
                reg = None if self.fence is None else await self.fence.register()
            except RedisUnavailable:
                await self._leave()
                if time.monotonic() >= give_up:
                    raise
                backoff = min(5.0, backoff * 2 or 0.25)
                await asyncio.sleep(backoff)
                continue
            except BaseException:
                await self._leave()
                raise
            if self.fence is None or not (reg is None or isinstance(reg, str)):
                break
            await self._leave()  # held elsewhere, or a switch to follow: this process's fence is free
            await self.fence.wait(reg)
        try:
            if reg is None:
                yield
            else:
                assert self.fence is not None
                assert not isinstance(reg, str)
                async with self.fence.writing(reg):
                    yield
        finally:
            await self._leave()

    async def _enter(self) -> None:
        async with self._no_writers:
            await self._no_writers.wait_for(lambda: not self._fenced)
            self._writers += 1

    async def _leave(self) -> None:
        async with self._no_writers:
            self._writers -= 1
            self._no_writers.notify_all()

    @asynccontextmanager
    async def exclusive(self, shared: bool = True) -> AsyncIterator[Hold | None]:
        """No write runs inside: waits for those in progress and holds new ones back; with a
        shared fence (unless `shared` is False: a change of this process alone) on every replica,
        and then yields its Hold, to `check()` before a commit."""
        async with self._no_writers:
            await self._no_writers.wait_for(lambda: not self._fenced)
            self._fenced = True
        try:  # (a cancellation while writes drain must lower the fence too)
            async with self._no_writers:
                await self._no_writers.wait_for(lambda: self._writers == 0)
            if self.fence is None or not shared:
                yield None
            else:
                async with self.fence.hold() as held:
                    yield held
        finally:
            async with self._no_writers:
                self._fenced = False
                self._no_writers.notify_all()

    # --- the VectorStore interface, passed on -----------------------------------------------

    async def ensure_collection(self, dim: int, embedder: str | None = None) -> bool:
        return await self._call(lambda s: s.ensure_collection(dim, embedder))

    async def check_embedder(self, embedder: str) -> None:
        await self._call(lambda s: s.check_embedder(embedder))

    async def ensure_indexes(self) -> list[str]:
        return await self._call(lambda s: s.ensure_indexes())

    async def drop(self) -> None:
        await self._call(lambda s: s.drop())

    async def search(
        self, vector: Vectors, k: int, ef: int, tenant: str, filters: Filters, exact: bool = False
    ) -> list[Candidate]:
        return await self._call(lambda s: s.search(vector, k, ef, tenant, filters, exact))

    async def nearest_ids(
        self, vectors: Vectors, k: int, ef: int, tenant: str
    ) -> list[list[tuple[str, float]]]:
        return await self._call(lambda s: s.nearest_ids(vectors, k, ef, tenant))

    async def existing(self, ids: list[str]) -> set[str]:
        return await self._call(lambda s: s.existing(ids))

    async def payloads(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        return await self._call(lambda s: s.payloads(ids))

    async def upsert(self, points: list[PointIn]) -> None:
        await self._call(lambda s: s.upsert(points))

    async def delete(self, ids: list[str]) -> None:
        await self._call(lambda s: s.delete(ids))

    async def optimize(self) -> None:
        await self._call(lambda s: s.optimize())

    async def count(self, tenant: str | None = None, filters: Filters | None = None) -> int:
        return await self._call(lambda s: s.count(tenant, filters))

    async def info(self) -> dict[str, Any]:
        return await self._call(lambda s: s.info())

    async def ping(self) -> None:
        await self._call(lambda s: s.ping())

    async def aclose(self) -> None:
        await self._current.aclose()
