"""SwappableStore on its own: a lease keeps a request on the store it began with across a swap,
the old store is closed only once no call and no lease uses it, later calls go to the new store,
and the write fence holds new writes while letting the ones in progress finish."""

from __future__ import annotations

import asyncio
from typing import Any

from app.clients.vectorstore.swap import SwappableStore


class Recorder:
    """A store that answers count() with its own name and can hold a call until released."""

    def __init__(self, name: str) -> None:
        self.collection = "rag_docs"
        self.name = name
        self.closed = False
        self.gate = asyncio.Event()
        self.gate.set()

    async def count(self, tenant: str | None = None, filters: Any = None) -> int:
        assert not self.closed, f"{self.name} used after close"
        await self.gate.wait()
        return 1 if self.name == "old" else 2

    async def aclose(self) -> None:
        self.closed = True


async def test_a_lease_stays_on_its_store_and_the_old_one_closes_after_it() -> None:
    old, new = Recorder("old"), Recorder("new")
    store = SwappableStore(old)  # type: ignore[arg-type]
    leased = asyncio.Event()
    release = asyncio.Event()
    seen: list[int] = []

    async def request() -> None:
        async with store.lease():
            seen.append(await store.count())
            leased.set()
            await release.wait()
            seen.append(await store.count())  # after the swap: still the old store

    task = asyncio.create_task(request())
    await leased.wait()
    swap = asyncio.create_task(store.swap(new))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert await store.count() == 2  # a call outside the lease already sees the new store
    assert not old.closed and not swap.done()
    release.set()
    await task
    assert await swap is old
    assert old.closed and not new.closed
    assert seen == [1, 1]
    assert store.generation == 1


async def test_a_call_in_progress_finishes_before_the_old_store_closes() -> None:
    old, new = Recorder("old"), Recorder("new")
    store = SwappableStore(old)  # type: ignore[arg-type]
    old.gate.clear()
    call = asyncio.create_task(store.count())
    await asyncio.sleep(0)
    swap = asyncio.create_task(store.swap(new))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert not old.closed
    old.gate.set()
    assert await call == 1
    await swap
    assert old.closed


async def test_the_fence_waits_for_writes_in_progress_and_holds_new_ones() -> None:
    store = SwappableStore(Recorder("old"))  # type: ignore[arg-type]
    events: list[str] = []
    writing = asyncio.Event()
    finish = asyncio.Event()

    async def writer(name: str, hold: asyncio.Event | None = None) -> None:
        async with store.writing():
            events.append(f"{name} in")
            if hold is not None:
                writing.set()
                await hold.wait()
            events.append(f"{name} out")

    async def fenced() -> None:
        async with store.exclusive():
            events.append("fence in")
            await asyncio.sleep(0)
            events.append("fence out")

    first = asyncio.create_task(writer("w1", finish))
    await writing.wait()
    fence = asyncio.create_task(fenced())
    await asyncio.sleep(0)
    second = asyncio.create_task(writer("w2"))
    await asyncio.sleep(0)
    assert events == ["w1 in"]  # the fence waits for w1; w2 waits for the fence
    finish.set()
    await asyncio.gather(first, fence, second)
    assert events == ["w1 in", "w1 out", "fence in", "fence out", "w2 in", "w2 out"]
