"""SwappableEmbedder: the one home of the serving embedder, so that a reindex that re-embeds the
collection with another model can change the embedder while the gateway serves (like
app/clients/vectorstore/swap.py for the store; docs/ARCHITECTURE.md, "Reindex").

Everything that embeds (pipeline, documents, jobs, snapshots, reindex) holds this object; it
passes each call to the embedder serving now and its `id` and `dim` are that embedder's. A
request that must embed with the model of the collection it searches takes a `lease()` together
with the store's. `swap()` is made only under the store's write fence, in the same step as the
collection switch.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import numpy.typing as npt

from app.clients.embedder.vectors import Vector
from app.clients.vectorstore.swap import Users
from app.errors import DependencyUnavailable

if TYPE_CHECKING:
    from app.clients.embedder import Embedder

T = TypeVar("T")


class SwappableEmbedder:
    """An Embedder that passes every call to the embedder serving now."""

    def __init__(self, embedder: Embedder) -> None:
        self._current = embedder
        self._users: dict[int, Users] = {id(embedder): Users()}
        self._pinned: contextvars.ContextVar[Embedder | None] = contextvars.ContextVar(
            "pinned_embedder", default=None
        )
        # why it must not embed now: the collection was made by a model it is not (follow.py)
        self.refused: str | None = None

    @property
    def current(self) -> Embedder:
        return self._pinned.get() or self._current

    @property
    def id(self) -> str:
        return self.current.id

    @property
    def dim(self) -> int:
        return self.current.dim

    @asynccontextmanager
    async def lease(self) -> AsyncIterator[None]:
        """Pin the current embedder for the calls made inside (one request, one model)."""
        if self._pinned.get() is not None:
            yield
            return
        embedder = self._current
        users = self._users[id(embedder)]
        users.enter()
        token = self._pinned.set(embedder)
        try:
            yield
        finally:
            self._pinned.reset(token)
            users.leave()

    def swap(self, new: Embedder) -> Embedder:
        """Embed with `new` from now on (at once: no await between the collection's commit point
        and this call); returns the old one, for `retire`."""
        old = self._current
        self._users.setdefault(id(new), Users())
        self._current = new
        return old

    async def retire(self, old: Embedder) -> None:
        """Close `old` once no call and no lease uses it (unless it serves again meanwhile)."""
        if old is self._current:
            return
        users = self._users.get(id(old))
        if users is not None:
            await users.idle.wait()
            if old is self._current:
                return
            self._users.pop(id(old), None)
        await old.aclose()

    async def _call(self, fn: Callable[[Embedder], Awaitable[T]]) -> T:
        if self.refused is not None:
            raise DependencyUnavailable("embedder", self.refused)
        embedder = self._pinned.get() or self._current
        users = self._users[id(embedder)]
        users.enter()
        try:
            return await fn(embedder)
        finally:
            users.leave()

    async def embed(self, text: str) -> Vector:
        return await self._call(lambda e: e.embed(text))

    async def embed_batch(self, texts: list[str]) -> npt.NDArray[np.float32]:
        return await self._call(lambda e: e.embed_batch(texts))

    async def ping(self) -> None:
        await self._call(lambda e: e.ping())

    async def aclose(self) -> None:
        await self._current.aclose()
