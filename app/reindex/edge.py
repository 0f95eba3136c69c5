"""Reindex on the embedded engine: the new collection is a shard directory beside the serving one
(`<collection>@<stamp>`); the pointer file naming it is the commit point (layout.py), and the
replaced shard is named by `<collection>.previous` when it is kept for a rollback. A kill before
the pointer moves leaves the old shard serving (the new one is removed at the next start); after
it, the new one."""

from __future__ import annotations

import asyncio
import secrets
import shutil
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

from app.clients.vectorstore import VectorStore
from app.clients.vectorstore.edge import EdgeStore
from app.clients.vectorstore.layout import new_sibling, previous_dir, read_embedder, set_serving_dir
from app.clients.vectorstore.swap import SwappableStore
from app.errors import Conflict, DependencyRejected
from app.reindex.pages import scroll_pages
from app.settings import Settings
from app.types import PointIn


def _edge(store: VectorStore) -> EdgeStore:
    assert isinstance(store, EdgeStore)
    return store


class EdgeReindex:
    def __init__(self, settings: Settings, store: SwappableStore) -> None:
        self._s, self.store = settings, store
        self._q = settings.qdrant

    async def embedder_of(self, store: VectorStore) -> str | None:
        recorded: str | None = await asyncio.to_thread(read_embedder, _edge(store).path)
        return recorded

    async def create(self, dim: int, m: int, ef_construct: int, embedder: str | None) -> VectorStore:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + secrets.token_hex(3)
        target = new_sibling(self._q.path, self._q.collection, stamp)
        new = EdgeStore(self._q.model_copy(update={"hnsw_m": m, "hnsw_ef_construct": ef_construct}), target)
        try:
            await new.ensure_collection(dim, embedder)
        except BaseException:
            await self.discard(new)
            raise
        return new

    def pages(self, store: VectorStore, vectors: bool) -> AsyncIterator[list[PointIn]]:
        return scroll_pages(_edge(store).scroll, self._s.reindex.batch, vectors)

    async def discard(self, new: VectorStore) -> None:
        edge = _edge(new)
        await edge.aclose()
        await asyncio.to_thread(shutil.rmtree, edge.path, True)

    async def switch(self, old: VectorStore, new: VectorStore, on_commit: Callable[[], None]) -> str:
        before, keep = previous_dir(self._q.path, self._q.collection), self._s.reindex.keep > 0
        old_path, new_path = _edge(old).path, _edge(new).path
        try:
            set_serving_dir(self._q.path, self._q.collection, new_path, old_path if keep else None)
        except BaseException:
            await self.discard(new)
            raise
        on_commit()  # the embedder swap, in the same step as the store's
        await self.store.swap(new)  # waits for requests on the old shard, then closes it
        gone: set[Path | None] = {before, None if keep else old_path}
        for path in gone - {None, new_path, old_path if keep else None}:
            assert path is not None
            await asyncio.to_thread(shutil.rmtree, path, True)
        return new_path.name

    async def can_rollback(self) -> bool:
        kept = previous_dir(self._q.path, self._q.collection)
        return kept is not None and kept != _edge(self.store.current).path

    async def previous_embedder(self) -> str | None:
        kept = previous_dir(self._q.path, self._q.collection)
        return None if kept is None else await asyncio.to_thread(read_embedder, kept)

    async def rollback(self, embedder: str, on_commit: Callable[[], None]) -> str:
        kept = previous_dir(self._q.path, self._q.collection)
        old = _edge(self.store.current)
        if kept is None or kept == old.path:
            raise Conflict("no previous collection is kept to roll back to")
        new = await asyncio.to_thread(EdgeStore, self._q, kept)
        try:
            try:
                await new.check_embedder(embedder)
            except DependencyRejected as exc:
                raise Conflict(f"cannot roll back: {exc.message.removeprefix('qdrant: ')}") from None
            await new.ensure_indexes()
            # the shard left is kept in turn: a rollback of the rollback serves it again
            set_serving_dir(self._q.path, self._q.collection, kept, old.path)
        except BaseException:
            await new.aclose()
            raise
        on_commit()
        await self.store.swap(new)
        return kept.name
