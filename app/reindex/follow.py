"""Replicas follow a model switch that another replica made (Qdrant server backend; see
docs/ARCHITECTURE.md, "Reindex").

A reindex job runs on one replica; its switch moves the server's alias, which every replica
searches. The replica that ran it swaps its embedder in the same step; the others learn of it
here: every `RAG_REINDEX__FOLLOW_S` each replica reads the alias and the embedder that the
collection it names records. Made by the serving embedder (an HNSW reindex): nothing to do.
Made by the other configured embedder (`RAG_EMBEDDER__*` or `RAG_REINDEX__NEXT_EMBEDDER__*`):
it is loaded and swapped in under the write fence, and a new
answer-cache generation starts. Made by neither: the embedder refuses to embed (readiness fails,
`/rag` answers 503) rather than search the collection with vectors of another model, until the
alias points at a collection it can serve again or the gateway restarts with the right settings.
With the shared write fence (app/clients/vectorstore/fence.py) a write also checks first when a
fence was taken since its replica last looked, so writes do not embed with the old model (a
check that fails fails the write); between another replica's switch and the next check (at most
the interval) queries still may.
"""

from __future__ import annotations

import asyncio
import logging
import time

from app.clients.embedder import Embedder
from app.errors import DependencyError
from app.reindex.server import ServerReindex
from app.reindex.service import Reindexer

log = logging.getLogger("rag.reindex")
LOG_EVERY_S = 60.0


class Follower:
    def __init__(self, reindexer: Reindexer, backend: ServerReindex, interval_s: float) -> None:
        self._r, self._b, self.interval_s = reindexer, backend, interval_s
        self._hopeless: str | None = None  # an alias target refused: made by no configured embedder
        self._logged = 0.0
        self._checking = asyncio.Lock()  # the periodic check and a write's (fence.py): one at a time

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.check()
            except DependencyError as exc:  # the server out of reach: the next check tries again
                if time.monotonic() - self._logged >= LOG_EVERY_S:
                    self._logged = time.monotonic()
                    log.warning("alias not read", extra={"error": exc.message})
            except Exception:
                log.exception("alias follower")

    async def check(self) -> bool:
        """Look at the alias and the embedder its collection records once; True when the serving
        embedder was swapped."""
        async with self._checking:
            return await self._check()

    async def _check(self) -> bool:
        target = (await self._b.serving.aliases()).get(self._b.alias)
        if target is None:
            return False
        # read every time, not only when the alias moved: this replica's own switch moves it too,
        # and a switch back to a collection looked at before must still be followed
        made_by = await self._b.serving.sibling(target).recorded_embedder()
        embedder = self._r.embedder
        if made_by is None or made_by == embedder.id:
            self._hopeless, embedder.refused = None, None
            return False
        if target == self._hopeless:  # refused already: nothing to retry until the alias moves
            return False
        found = self._r.choice.settings_of(made_by)
        try:
            if found is None:
                raise LookupError(f"neither configured embedder is it ({', '.join(self._r.choice.ids())})")
            new: Embedder = await asyncio.to_thread(self._r.choice.load, found)
        except Exception as exc:
            await self._refuse(f"the serving collection {target!r} was embedded by {made_by}: {exc}")
            if found is None:
                self._hopeless = target
            return False  # (a model that failed to load is tried again at the next check)
        old = None
        try:
            async with self._r.store.exclusive(shared=False):  # this replica's writes only
                still = (await self._b.serving.aliases()).get(self._b.alias) == target
                if still and made_by != embedder.id:  # (this replica's own job may have swapped)
                    old = embedder.swap(new)
                    embedder.refused = None
                    await self._r.swapped()
        finally:
            if old is not None:
                await embedder.retire(old)
            else:
                await new.aclose()
        if old is not None:
            log.warning(
                "followed a switch made by another replica: serving with the collection's embedder;"
                " promote its settings (RAG_EMBEDDER__*) before the next restart",
                extra={"collection": target, "embedder": made_by},
            )
        return old is not None

    async def _refuse(self, why: str) -> None:
        """Embed nothing (503, readiness fails, jobs wait) and serve no answer cached before."""
        first = self._r.embedder.refused is None
        self._r.embedder.refused = why
        if first:
            log.error("refusing to embed", extra={"error": why})
            await self._r.swapped()
