"""The reindex job, the same on both backends (docs/ARCHITECTURE.md, "Reindex").

With writes held (the store's write fence, for the whole build: a `POST /documents` or an
ingestion batch waits, then lands in the new collection), every point of the serving collection
is copied into a new one, page by page: with its stored vector, or re-embedded from its stored
text (`reembed`) by the next embedder when one is configured (a model change; the serving
embedder is swapped to it at the switch's commit point, embedders.py), else by the serving one.
The new collection is indexed, then verified: the same number of points, the same payloads for a
random sample of them, and each sampled point found by exact search of its vector in the new
collection (at the score the serving one gives it, when the vectors are kept).
Then the backend switches (its commit point: the pointer file, or the alias), the serving store
is swapped (requests in flight finish on the old one) and a new answer-cache generation starts.
A build or a verification that fails leaves the serving collection as it was, and removes the
new one.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from app.clients.embedder import Embedder, configured_id
from app.clients.embedder.swap import SwappableEmbedder
from app.clients.vectorstore import VectorStore
from app.clients.vectorstore.swap import SwappableStore
from app.errors import Conflict
from app.job_store import Job
from app.reindex.embedders import EmbedderChoice, promote_env
from app.settings import EmbedderSettings, Settings
from app.types import PointIn

if TYPE_CHECKING:
    from app.clients.vectorstore.fence import Hold
    from app.reindex.follow import Follower

log = logging.getLogger("rag.reindex")
SCORE_TOLERANCE = 1e-4  # cosine scores of one vector in two collections (float32 sums)


class ReindexFailed(Exception):
    """The new collection is not the serving one's equal: nothing was switched."""


@dataclass(frozen=True, slots=True)
class ReindexParams:
    m: int | None = None
    ef_construct: int | None = None
    reembed: bool = False
    rollback: bool = False

    @classmethod
    def of(cls, params: dict[str, Any]) -> ReindexParams:
        hnsw = params.get("hnsw") or {}
        return cls(
            hnsw.get("m"), hnsw.get("ef_construct"), bool(params.get("reembed")), bool(params.get("rollback"))
        )


class Backend(Protocol):
    """What a backend does for a reindex (edge.EdgeReindex, server.ServerReindex)."""

    async def embedder_of(self, store: VectorStore) -> str | None: ...

    async def create(self, dim: int, m: int, ef_construct: int, embedder: str | None) -> VectorStore: ...

    def pages(self, store: VectorStore, vectors: bool) -> AsyncIterator[list[PointIn]]: ...

    async def discard(self, new: VectorStore) -> None: ...

    async def switch(self, old: VectorStore, new: VectorStore, on_commit: Callable[[], None]) -> str: ...

    async def can_rollback(self) -> bool: ...

    async def previous_embedder(self) -> str | None: ...

    async def rollback(self, embedder: str, on_commit: Callable[[], None]) -> str: ...


Observe = Callable[[str, str, float], None]  # (op: reindex or rollback, outcome: ok or error, seconds)


class Reindexer:
    """Runs reindex jobs (JobRunner.kinds["reindex"]) against the serving store."""

    def __init__(
        self,
        settings: Settings,
        store: SwappableStore,
        embedder: SwappableEmbedder,
        backend: Backend,
        on_swap: Callable[[], Awaitable[None]] | None = None,
        observe: Observe | None = None,
    ) -> None:
        self._s, self.store, self.embedder, self.backend = settings, store, embedder, backend
        self.choice = EmbedderChoice(settings)
        self._on_swap, self._observe = on_swap, observe
        self.save: Callable[[Job], None] = lambda job: None  # the job's record (set by the runner)
        self.follower: Follower | None = None  # Qdrant server: follows other replicas' switches

    async def can_rollback(self) -> bool:
        return await self.backend.can_rollback()

    async def check_rollback(self) -> EmbedderSettings | None:
        """Conflict unless a rollback can be made: a kept collection, made by the serving embedder
        or by another configured one (returned: the rollback swaps to it)."""
        if not await self.backend.can_rollback():
            raise Conflict("no previous collection is kept to roll back to")
        made_by = await self.backend.previous_embedder()
        if made_by is None or made_by == self.embedder.id:
            return None
        found = self.choice.settings_of(made_by)
        if found is None:
            raise Conflict(
                f"cannot roll back: the previous collection was embedded by {made_by}, and neither "
                f"configured embedder is it ({', '.join(self.choice.ids())})"
            )
        return found

    async def _load(self, s: EmbedderSettings) -> Embedder:
        loaded: Embedder = await asyncio.to_thread(self.choice.load, s)
        return loaded

    def _swap_to(self, target: Embedder | None, replaced: list[Embedder]) -> Callable[[], None]:
        """The commit hook of a switch: the serving embedder becomes `target` (if any) at once."""

        def commit() -> None:
            if target is not None:
                replaced.append(self.embedder.swap(target))

        return commit

    async def _settle(self, target: Embedder | None, replaced: list[Embedder]) -> None:
        """After a switch (made or not): close the embedder no longer serving."""
        if replaced:
            await self.embedder.retire(replaced[0])
        elif target is not None:
            await target.aclose()

    async def run(self, job: Job) -> None:
        params = ReindexParams.of(job.params)
        started, outcome = time.monotonic(), "error"
        try:
            if params.rollback:
                job.result = await self._rollback()
            else:
                await self._reindex(params, job)
            outcome = "ok"
        finally:
            if self._observe is not None:
                op = "rollback" if params.rollback else "reindex"
                self._observe(op, outcome, time.monotonic() - started)
        log.warning("reindex switched the serving collection", extra={"job_id": job.job_id, **job.result})

    async def swapped(self) -> None:
        if self._on_swap is not None:  # no answer from before the switch is served again
            await self._on_swap()

    async def _rollback(self) -> dict[str, Any]:
        other = await self.check_rollback()  # loaded before the fence: writes wait for less
        target = None if other is None else await self._load(other)
        replaced: list[Embedder] = []
        was = self.embedder.id
        try:
            async with self.store.exclusive():  # every replica's writes, with a shared fence
                wanted = self.embedder.id if target is None else target.id
                name = await self.backend.rollback(wanted, self._swap_to(target, replaced))
                await self.swapped()
        finally:
            await self._settle(target, replaced)
        result = {"collection": name, "rolled_back": True, "points": await self.store.count()}
        if target is not None:
            result.update(embedder=target.id, previous_embedder=was, **self._promote(other))
        return result

    def _promote(self, s: EmbedderSettings | None) -> dict[str, Any]:
        """What to make the configured embedder (`RAG_EMBEDDER__*`) before the next restart."""
        if s is None or s is self.choice.serving:
            return {"promote": {}, "promote_note": "the configured embedder serves: nothing to promote"}
        note = (
            "before the next restart, set the embedder settings (RAG_EMBEDDER__*) to these, "
            "every other field at its default"
        )
        return {"promote": promote_env(s), "promote_note": note}

    async def _next(self) -> tuple[EmbedderSettings, Embedder] | None:
        """The next embedder, loaded, when one is configured and is not the serving one."""
        s = self.choice.next
        if s is None or configured_id(s) == self.embedder.id:
            return None
        return s, await self._load(s)

    async def _reindex(self, p: ReindexParams, job: Job) -> None:
        nxt = await self._next() if p.reembed else None  # loaded before the fence
        target = None if nxt is None else nxt[1]
        maker: Embedder = target or self.embedder  # what makes the new vectors (reembed)
        replaced: list[Embedder] = []
        was = self.embedder.id
        try:
            async with self.store.exclusive() as held:  # writes held for the whole build (module docstring)
                old = self.store.current
                info = await old.info()
                total = await old.count()
                job.result = {"points": total, "points_done": 0}
                self.save(job)
                hnsw = info["config"]["hnsw_config"]
                m = p.m or hnsw.get("m") or self._s.qdrant.hnsw_m
                ef = p.ef_construct or hnsw.get("ef_construct") or self._s.qdrant.hnsw_ef_construct
                embedder: str | None = maker.id
                dim = maker.dim
                if not p.reembed:  # the vectors are kept: so are their size and their maker
                    dim = info["config"]["params"]["vectors"]["size"]
                    embedder = await self.backend.embedder_of(old)
                new = await self.backend.create(dim, m, ef, embedder)
                try:
                    sample = await self._copy(old, new, maker if p.reembed else None, job, held)
                    await new.optimize()
                    await self._verify(old, new, sample, p.reembed, total)
                    if held is not None:  # still every replica's writes held (shared fence)
                        held.check()
                    self.save(job)  # and still this replica's job (a shared queue's lease)
                except BaseException:
                    await self.backend.discard(new)
                    raise
                # discards `new` itself if it fails; the embedder is swapped at the commit point
                name = await self.backend.switch(old, new, self._swap_to(target, replaced))
                await self.swapped()
        finally:
            await self._settle(target, replaced)
        job.result.update(
            collection=name, hnsw={"m": m, "ef_construct": ef}, embedder=embedder, reembedded=p.reembed
        )
        if nxt is not None:
            job.result.update(previous_embedder=was, **self._promote(nxt[0]))

    async def _copy(
        self, old: VectorStore, new: VectorStore, maker: Embedder | None, job: Job, held: Hold | None
    ) -> list[PointIn]:
        """Every point of `old` into `new`, re-embedded by `maker` if given; returns a random
        sample of the points written."""
        reembed = maker is not None
        size, rng = self._s.reindex.verify_samples, random.Random()
        sample: list[PointIn] = []
        seen = 0
        async for page in self.backend.pages(old, vectors=not reembed):
            if reembed and page:
                assert maker is not None
                vectors = await maker.embed_batch([str(q.payload.get("text", "")) for q in page])
                page = [PointIn(q.id, vectors[i], q.payload) for i, q in enumerate(page)]
            if page:
                await new.upsert(page)
            for point in page:  # reservoir sampling
                seen += 1
                if len(sample) < size:
                    sample.append(point)
                elif (j := rng.randrange(seen)) < size:
                    sample[j] = point
            job.result["points_done"] = seen
            if held is not None:
                held.check()
            self.save(job)
        return sample

    async def _verify(
        self, old: VectorStore, new: VectorStore, sample: list[PointIn], reembed: bool, total: int
    ) -> None:
        n = await new.count()
        if n != total:
            raise ReindexFailed(f"the new collection holds {n} points, the serving one {total}")
        ids = [p.id for p in sample]
        if await new.payloads(ids) != await old.payloads(ids):
            raise ReindexFailed("sampled points' payloads differ between the new and the serving collection")
        ef = self._s.qdrant.ef_default
        for p in sample:
            tenant = str(p.payload.get("tenant", ""))
            found = await new.search(p.vector, 5, ef, tenant, {}, exact=True)
            mine = [c.score for c in found if c.id == p.id]
            if not mine or mine[0] < found[0].score - SCORE_TOLERANCE:
                raise ReindexFailed(f"point {p.id} is not found by its own vector in the new collection")
            if not reembed:
                was = await old.search(p.vector, 1, ef, tenant, {}, exact=True)
                if not was or abs(was[0].score - found[0].score) > SCORE_TOLERANCE:
                    raise ReindexFailed(f"searches for point {p.id} disagree between the collections")
