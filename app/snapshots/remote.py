"""Snapshots of a collection on a Qdrant server, through the server's own snapshot API
(docs/ARCHITECTURE.md, "Snapshots"): the server makes, keeps, checks (checksum) and recovers
them; the gateway lists and names them, applies the retention setting and, after a recovery,
starts a new answer-cache generation. The server recovers in place: there is no store to swap."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from app.clients.vectorstore.server import ServerStore
from app.clients.vectorstore.swap import SwappableStore
from app.errors import NotFound
from app.settings import Settings
from app.snapshots.observe import Observe, timed
from app.snapshots.service import SnapshotInfo


def _created(desc: Any) -> float:
    raw = getattr(desc, "creation_time", None)
    if not raw:
        return 0.0
    try:
        return datetime.fromisoformat(str(raw)).timestamp()
    except ValueError:
        return 0.0


def _info(desc: Any, points: int | None = None) -> SnapshotInfo:
    return SnapshotInfo(desc.name, _created(desc), points, int(desc.size or 0), desc.checksum)


class ServerSnapshots:
    """The same calls as Snapshots, answered by the Qdrant server's snapshot API."""

    def __init__(
        self,
        settings: Settings,
        holder: SwappableStore,
        store: ServerStore,
        on_swap: Callable[[], Awaitable[None]] | None = None,
        observe: Observe | None = None,
        on_newest: Callable[[float], None] | None = None,
    ) -> None:
        self._s = settings
        self.holder, self.store = holder, store
        self._on_swap, self._observe, self._on_newest = on_swap, observe, on_newest
        self._busy = asyncio.Lock()

    async def _timed(self, op: str, work: Callable[[], Awaitable[Any]]) -> Any:
        return await timed(self._observe, op, work)

    async def snapshots(self) -> list[SnapshotInfo]:
        out = [_info(d) for d in await self.store.list_snapshots()]
        out.sort(key=lambda i: (i.created_at, i.name), reverse=True)
        return out

    async def refresh_newest(self) -> None:
        if self._on_newest is not None:
            snaps = await self.snapshots()
            self._on_newest(snaps[0].created_at if snaps else 0.0)

    async def _known(self, name: str) -> SnapshotInfo:
        for info in await self.snapshots():
            if info.name == name:
                return info
        raise NotFound("no such snapshot")

    async def create(self) -> SnapshotInfo:
        async def work() -> SnapshotInfo:
            points = await self.store.count()
            info = _info(await self.store.create_snapshot(), points)
            for old in (await self.snapshots())[self._s.snapshots.keep :]:
                await self.store.delete_snapshot(old.name)
            return info

        async with self._busy:
            info: SnapshotInfo = await self._timed("create", work)
        await self.refresh_newest()
        return info

    async def delete(self, name: str) -> None:
        async def work() -> None:
            await self._known(name)
            await self.store.delete_snapshot(name)

        async with self._busy:
            await self._timed("delete", work)
        await self.refresh_newest()

    async def restore(self, name: str) -> SnapshotInfo:
        async def work() -> SnapshotInfo:
            info = await self._known(name)
            async with self.holder.exclusive():  # no write lands while the server replaces the data
                await self.store.recover_snapshot(name, info.sha256)
            if self._on_swap is not None:
                await self._on_swap()
            return info

        async with self._busy:
            result: SnapshotInfo = await self._timed("restore", work)
        return result
