"""Reindex on a Qdrant server: the serving name is an alias (`<collection>` -> a collection), the
new collection is `<collection>-r<stamp>`, and the switch is one alias request that points
`<collection>` at it and `<collection>-previous` at the collection it replaces (kept for a
rollback); the server applies the request at once, so a kill leaves the old target or the new.
The gateway's store addresses the alias, so no store is swapped. A serving name that is a
collection itself (not an alias) is refused: RUNBOOK.md, "Reindex", shows the one-time move."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

from app.clients.vectorstore import VectorStore
from app.clients.vectorstore.server import ServerStore
from app.errors import Conflict, DependencyRejected
from app.reindex.pages import scroll_pages
from app.settings import Settings
from app.types import PointIn

PREVIOUS = "-previous"


def _server(store: VectorStore) -> ServerStore:
    assert isinstance(store, ServerStore)
    return store


class ServerReindex:
    def __init__(self, settings: Settings, serving: ServerStore) -> None:
        self._s, self.serving = settings, serving
        self.alias = settings.qdrant.collection

    async def _target(self) -> tuple[str, dict[str, str]]:
        aliases = await self.serving.aliases()
        if self.alias not in aliases:
            raise Conflict(
                f"collection {self.alias!r} is not served through an alias: move it once "
                "(RUNBOOK.md, Reindex) before a reindex"
            )
        return aliases[self.alias], aliases

    async def embedder_of(self, store: VectorStore) -> str | None:
        return await _server(store).recorded_embedder()

    async def create(self, dim: int, m: int, ef_construct: int, embedder: str | None) -> VectorStore:
        await self._target()  # refused before anything is built
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + secrets.token_hex(3)
        new = self.serving.sibling(f"{self.alias}-r{stamp}", m, ef_construct)
        try:
            await new.ensure_collection(dim, embedder)
        except BaseException:
            await self.discard(new)
            raise
        return new

    def pages(self, store: VectorStore, vectors: bool) -> AsyncIterator[list[PointIn]]:
        return scroll_pages(_server(store).scroll, self._s.reindex.batch, vectors)

    async def discard(self, new: VectorStore) -> None:
        await new.drop()
        await new.aclose()

    async def switch(self, old: VectorStore, new: VectorStore, on_commit: Callable[[], None]) -> str:
        name = _server(new).collection
        try:
            replaced, aliases = await self._target()
            keep = self._s.reindex.keep > 0
            before = aliases.get(self.alias + PREVIOUS)
            await self.serving.set_aliases(
                {self.alias: name, **({self.alias + PREVIOUS: replaced} if keep else {})}
            )  # the commit point
        except BaseException:
            await self.discard(new)
            raise
        on_commit()  # the embedder swap, right after the alias moved
        await new.aclose()
        for gone in {before, None if keep else replaced} - {None, name, replaced if keep else None}:
            assert gone is not None
            await self.serving.sibling(gone).drop()
        return name

    async def can_rollback(self) -> bool:
        aliases = await self.serving.aliases()
        kept = aliases.get(self.alias + PREVIOUS)
        return kept is not None and self.alias in aliases and kept != aliases[self.alias]

    async def previous_embedder(self) -> str | None:
        kept = (await self.serving.aliases()).get(self.alias + PREVIOUS)
        return None if kept is None else await self.serving.sibling(kept).recorded_embedder()

    async def rollback(self, embedder: str, on_commit: Callable[[], None]) -> str:
        serving, aliases = await self._target()
        kept = aliases.get(self.alias + PREVIOUS)
        if kept is None or kept == serving:
            raise Conflict("no previous collection is kept to roll back to")
        try:
            await self.serving.sibling(kept).check_embedder(embedder)
        except DependencyRejected as exc:
            raise Conflict(f"cannot roll back: {exc.message.removeprefix('qdrant: ')}") from None
        # the collection left is kept in turn: a rollback of the rollback serves it again
        await self.serving.set_aliases({self.alias: kept, self.alias + PREVIOUS: serving})
        on_commit()
        return kept
