"""Snapshots of the embedded engine's collection, and restoring one while the gateway serves
(docs/ARCHITECTURE.md, "Snapshots").

Create: writes are held (the store's write fence) while the engine flushes and the shard is
copied (sparse), then the copy is packed into one file beside its checksum. A snapshot is listed
once `<name>.tar.gz` exists; its `.sha256` (sha256sum's format) is written before it, and both
are renamed into place after an fsync, so a kill leaves no half-snapshot listed.

Restore: the checksum, the manifest and its collection and embedder are checked before anything
is touched; the shard is unpacked beside the serving one and opened; then, with writes held, the
pointer file names it (the commit point) and the serving store is swapped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from app.clients.embedder import Embedder
from app.clients.vectorstore.edge import EdgeStore
from app.clients.vectorstore.files import copy_tree
from app.clients.vectorstore.layout import fsync_dir, new_sibling, set_serving_dir, write_atomically
from app.clients.vectorstore.swap import SwappableStore
from app.errors import Conflict, DependencyRejected, NotFound, NotSupported, SnapshotInvalid
from app.settings import Settings
from app.snapshots.archive import FORMAT, pack, read_manifest, recorded_sum, sha256_of, unpack
from app.snapshots.observe import Observe, timed

log = logging.getLogger("rag.snapshots")
NAME_RE = re.compile(r"^[A-Za-z0-9_\-]{1,128}-[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}$")
# a route's name on both backends (a server's: `<coll>-<id>-<date>.snapshot`): no `/`, leading `.` or `..`
ROUTE_NAME_PATTERN = r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$"
SUFFIX = ".tar.gz"
SUM_SUFFIX = ".tar.gz.sha256"


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    name: str
    created_at: float
    points: int | None  # None: the file's manifest cannot be read
    size_bytes: int
    sha256: str | None  # None: no checksum file beside it

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class SnapshotService(Protocol):
    """What the API asks of either backend's snapshots (Snapshots here, remote.ServerSnapshots)."""

    async def create(self) -> SnapshotInfo: ...

    async def snapshots(self) -> list[SnapshotInfo]: ...

    async def delete(self, name: str) -> None: ...

    async def restore(self, name: str) -> SnapshotInfo: ...

    async def refresh_newest(self) -> None: ...


def snapshot_dir(settings: Settings) -> Path:
    return settings.snapshots.dir or settings.qdrant.path.parent / "snapshots"


class Snapshots:
    """Create, list, delete and restore the snapshots of one serving store."""

    def __init__(
        self,
        settings: Settings,
        store: SwappableStore,
        embedder: Embedder,
        on_swap: Callable[[], Awaitable[None]] | None = None,
        observe: Observe | None = None,
        on_newest: Callable[[float], None] | None = None,
    ) -> None:
        self._s = settings
        self.dir = snapshot_dir(settings)
        self.store = store
        self.embedder = embedder  # the serving one (swappable): its id and dim are read each time
        self._on_swap, self._observe, self._on_newest = on_swap, observe, on_newest
        self._busy = asyncio.Lock()  # one snapshot operation at a time

    # --- files ----------------------------------------------------------------------------

    def _file(self, name: str) -> Path:
        if not NAME_RE.match(name):
            raise NotFound("no such snapshot")  # also every name that could leave the directory
        path = self.dir / f"{name}{SUFFIX}"
        if not path.is_file():
            raise NotFound("no such snapshot")
        return path

    def sweep(self) -> None:
        """Remove what an interrupted create left (work copies, unrenamed files); owner only."""
        if not self.dir.is_dir():
            return
        for entry in self.dir.iterdir():
            n = entry.name
            if n.startswith(".work-") and entry.is_dir():
                shutil.rmtree(entry)
            elif n.startswith(".") and n.endswith((f"{SUFFIX}.tmp", f"{SUM_SUFFIX}.tmp")):
                entry.unlink()
            elif (
                n.endswith(SUM_SUFFIX)
                and NAME_RE.match(n[: -len(SUM_SUFFIX)])
                and not entry.with_name(n[: -len(".sha256")]).exists()
            ):
                entry.unlink()  # a create killed between its checksum and its file

    async def snapshots(self) -> list[SnapshotInfo]:
        return await asyncio.to_thread(self.list)

    def list(self) -> list[SnapshotInfo]:
        """Every snapshot, newest first."""
        if not self.dir.is_dir():
            return []
        out = []
        for path in self.dir.glob(f"*{SUFFIX}"):
            name = path.name[: -len(SUFFIX)]
            if NAME_RE.match(name):
                out.append(self._describe(name, path))
        out.sort(key=lambda i: (i.created_at, i.name), reverse=True)
        return out

    def _describe(self, name: str, path: Path) -> SnapshotInfo:
        try:
            manifest: dict[str, Any] | None = read_manifest(path)
        except SnapshotInvalid:
            manifest = None
        created = manifest.get("created_at") if manifest else None
        at = float(created) if isinstance(created, int | float) else path.stat().st_mtime
        points = manifest["points"] if manifest else None
        return SnapshotInfo(name, at, points, path.stat().st_size, recorded_sum(path))

    async def refresh_newest(self) -> None:
        if self._on_newest is not None:
            snaps = await asyncio.to_thread(self.list)
            self._on_newest(snaps[0].created_at if snaps else 0.0)

    # --- operations -----------------------------------------------------------------------

    async def _timed(self, op: str, work: Callable[[], Awaitable[Any]]) -> Any:
        return await timed(self._observe, op, work)

    def _edge(self) -> EdgeStore:
        store = self.store.current
        if not isinstance(store, EdgeStore):
            raise NotSupported("snapshots are made by the embedded engine only; use Qdrant's snapshot API")
        return store

    async def create(self) -> SnapshotInfo:
        async with self._busy:
            info: SnapshotInfo = await self._timed("create", self._create)
            await asyncio.to_thread(self._retain)
        await self.refresh_newest()
        return info

    async def _create(self) -> SnapshotInfo:
        edge = self._edge()
        created = time.time()
        stamp = datetime.fromtimestamp(created, UTC).strftime("%Y%m%dT%H%M%SZ")
        name = f"{self.store.collection}-{stamp}-{secrets.token_hex(3)}"
        self.dir.mkdir(parents=True, exist_ok=True)
        work = self.dir / f".work-{name}"
        # the manifest names this embedder: refuse (409) a shard another one made (a CLI run with
        # other RAG_EMBEDDER__* settings than the gateway's would write backups it refuses)
        await self._check_embedder(edge)
        try:
            async with self.store.exclusive():  # writes held; searches go on
                edge = self._edge()  # serving now: a reindex may have swapped it while we waited
                await edge.flush()
                points = await edge.count()
                await asyncio.to_thread(copy_tree, edge.path, work)
            manifest = {
                "format": FORMAT,
                "collection": self.store.collection,
                "embedder_id": self.embedder.id,
                "embedder_dim": self.embedder.dim,
                "points": points,
                "created_at": created,
            }
            final = self.dir / f"{name}{SUFFIX}"
            tmp = self.dir / f".{name}{SUFFIX}.tmp"
            await asyncio.to_thread(pack, work, manifest, tmp)
            digest = await asyncio.to_thread(sha256_of, tmp)
            # the checksum first, then the snapshot: once it is listed, its checksum is there
            write_atomically(final.with_name(final.name + ".sha256"), f"{digest}  {final.name}\n".encode())
            os.replace(tmp, final)
            fsync_dir(self.dir)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
        log.info("snapshot created", extra={"snapshot": name, "points": points})
        return SnapshotInfo(name, created, points, final.stat().st_size, digest)

    def _retain(self) -> None:
        for old in self.list()[self._s.snapshots.keep :]:
            self._remove(old.name)
            log.info("snapshot removed by retention", extra={"snapshot": old.name})

    def _remove(self, name: str) -> None:
        path = self._file(name)
        path.unlink()  # first: a snapshot without its checksum file is never restored
        path.with_name(path.name + ".sha256").unlink(missing_ok=True)
        fsync_dir(self.dir)

    async def delete(self, name: str) -> None:
        async def work() -> None:
            await asyncio.to_thread(self._remove, name)

        async with self._busy:
            await self._timed("delete", work)
        await self.refresh_newest()

    def verify(self, name: str) -> tuple[Path, dict[str, Any]]:
        """The snapshot's file and manifest, once its checksum and identities are right."""
        path = self._file(name)
        recorded = recorded_sum(path)
        if recorded is None:
            raise SnapshotInvalid("the snapshot has no checksum file beside it")
        if sha256_of(path) != recorded:
            raise SnapshotInvalid("the snapshot's checksum does not match: truncated or corrupt")
        manifest = read_manifest(path)
        if manifest["collection"] != self.store.collection:
            raise Conflict(
                f"the snapshot is of collection {manifest['collection']!r}, not {self.store.collection!r}"
            )
        if (manifest["embedder_id"], manifest["embedder_dim"]) != (self.embedder.id, self.embedder.dim):
            raise Conflict(
                f"the snapshot was made with embedder {manifest['embedder_id']!r} "
                f"(dim {manifest['embedder_dim']}), not {self.embedder.id!r} (dim {self.embedder.dim})"
            )
        return path, manifest

    async def _check_embedder(self, store: EdgeStore) -> None:
        try:
            await store.check_embedder(self.embedder.id)
        except DependencyRejected as exc:
            raise Conflict(exc.message.removeprefix("qdrant: ")) from None

    async def restore(self, name: str) -> SnapshotInfo:
        async with self._busy:
            info: SnapshotInfo = await self._timed("restore", lambda: self._restore(name))
        return info

    async def _restore(self, name: str) -> SnapshotInfo:
        old = self._edge()
        path, manifest = await asyncio.to_thread(self.verify, name)
        q = self._s.qdrant
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + secrets.token_hex(3)
        target = new_sibling(q.path, q.collection, stamp)
        unpacking = target.with_name(target.name + ".tmp")
        try:
            await asyncio.to_thread(unpack, path, unpacking)
            os.replace(unpacking, target)
            fsync_dir(q.path)
            new = await asyncio.to_thread(EdgeStore, q, target)  # loading takes a while: off the loop
        except Exception:
            await asyncio.to_thread(shutil.rmtree, unpacking, True)
            await asyncio.to_thread(shutil.rmtree, target, True)
            raise
        committed = False
        try:
            # the shard must record the manifest's embedder (a manifest can lie about it)
            await self._check_embedder(new)
            try:
                points = await new.count()
            except Exception:
                points = -1
            if points != manifest["points"]:
                raise SnapshotInvalid("the snapshot's shard does not open with the points its manifest names")
            await new.ensure_indexes()  # filter keys allow-listed since the snapshot get their index
            async with self.store.exclusive():  # no write straddles the swap
                set_serving_dir(q.path, q.collection, target)  # the commit point
                committed = True
                try:
                    await self.store.swap(new)
                finally:  # served from the restored data from here on: no answer from before it
                    if self._on_swap is not None:
                        await self._on_swap()
        except BaseException:
            if not committed:  # nothing swapped: drop the unpacked copy now, not at the next start
                await new.aclose()
                await asyncio.to_thread(shutil.rmtree, target, True)
            raise
        await asyncio.to_thread(shutil.rmtree, old.path, True)
        log.info("snapshot restored", extra={"snapshot": name, "points": points, "shard": target.name})
        return self._describe(name, path)
