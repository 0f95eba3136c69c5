"""The part of the VectorStore interface both backends share: what a call means is written once
here, and each backend supplies the few primitives that speak its library."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import numpy.typing as npt

from app.clients.vectorstore.shared import (
    DEPENDENCY,
    NEAREST_BATCH,
    Condition,
    check_dim,
    conditions,
)
from app.errors import DependencyRejected, DependencyUnavailable
from app.settings import QdrantSettings
from app.types import Candidate, Filters

log = logging.getLogger("rag.vectorstore")
Vectors = npt.NDArray[np.float32]


class QdrantStore(ABC):
    """Search, counts and collection set-up in terms of the backend primitives below."""

    def __init__(self, settings: QdrantSettings) -> None:
        self._s = settings
        self.collection = settings.collection

    # --- the backend's primitives ---------------------------------------------------------

    @abstractmethod
    async def _exists(self) -> bool:
        """Whether the collection exists; asks the backend, so it fails when the backend does."""

    @abstractmethod
    async def _stored_dim(self) -> int | None:
        """The vector size the collection was made with, None if it cannot be told."""

    @abstractmethod
    async def _stored_embedder(self) -> str | None:
        """The id of the embedder the collection records as having made its vectors, if any."""

    @abstractmethod
    async def _record_embedder(self, embedder: str) -> None:
        """Record `embedder` as the one that makes the collection's vectors."""

    @abstractmethod
    async def _create(self, dim: int) -> None:
        """Make the collection and its payload indexes (shared.payload_indexes)."""

    @abstractmethod
    async def _indexed(self) -> dict[str, str]:
        """Payload key -> data type of every payload index the collection has."""

    @abstractmethod
    async def _add_indexes(self, names: list[str]) -> None:
        """Index the allow-listed filter keys `names`, typed as configured."""

    @abstractmethod
    async def _refresh(self) -> None:
        """Once per start, after _add_indexes: apply settings that changed since the collection was
        made (full_scan_threshold) and, where the backend waits for it, rebuild what is stale."""

    @abstractmethod
    async def _query(
        self, vectors: Vectors, k: int, ef: int, where: list[Condition], exact: bool, payload: bool
    ) -> list[list[Candidate]]:
        """The top k of each vector under `where`, best first, as one batch."""

    @abstractmethod
    async def _count(self, where: list[Condition]) -> int:
        """How many points match `where`, exactly."""

    @abstractmethod
    async def _retrieve(self, ids: list[str], payload: bool) -> dict[str, dict[str, Any]]:
        """Point id -> payload ({} unless `payload`) of each of `ids` that is a point now."""

    @abstractmethod
    async def _build_index(self) -> None:
        """What optimize() adds on this backend once the collection is known to exist."""

    # --- the interface --------------------------------------------------------------------

    async def ensure_collection(self, dim: int, embedder: str | None = None) -> bool:
        """Create the collection if it does not exist, recording `embedder` (its id) as the maker
        of its vectors; True if it was created. An existing one of another vector size, or made
        by another embedder, is refused (DependencyRejected)."""
        if await self._exists():
            check_dim(self.collection, await self._stored_dim(), dim)
            if embedder is not None:
                await self.check_embedder(embedder)
            return False
        await self._create(dim)
        if embedder is not None:
            await self._record_embedder(embedder)
        return True

    async def check_embedder(self, embedder: str) -> None:
        """Vectors of one model (or variant) are meaningless to another's queries: a collection
        that records another embedder is refused (DependencyRejected). One that records none (made
        before collections recorded it) takes `embedder`, and the log says so. No collection, no
        check: the first write creates it with `embedder`."""
        if not await self._exists():
            return
        stored = await self._stored_embedder()
        if stored is None:
            await self._record_embedder(embedder)
            log.warning(
                "collection recorded no embedder: recording this one",
                extra={"collection": self.collection, "embedder": embedder},
            )
        elif stored != embedder:
            raise DependencyRejected(
                DEPENDENCY,
                f"collection {self.collection!r} was embedded by {stored} but this gateway embeds "
                f"with {embedder}; set the embedder back, or re-embed into a new collection",
            )

    async def ensure_indexes(self) -> list[str]:
        """Add the payload index of every allow-listed filter key the collection lacks (a
        collection made by an older version); returns the keys indexed now."""
        if not await self._exists():
            return []
        have = await self._indexed()
        for name, kind in self._s.filter_keys.items():
            if have.get(name, kind) != kind:
                log.warning(
                    "payload index of another type",
                    extra={
                        "collection": self.collection,
                        "key": name,
                        "index": have[name],
                        "configured": kind,
                    },
                )
        added = [name for name in self._s.filter_keys if name not in have]
        await self._add_indexes(added)
        await self._refresh()
        return added

    async def search(
        self, vector: Vectors, k: int, ef: int, tenant: str, filters: Filters, exact: bool = False
    ) -> list[Candidate]:
        """The top k passages of `tenant` for `vector` matching every filter key, best first."""
        (hits,) = await self._query(vector[np.newaxis], k, ef, conditions(tenant, filters), exact, True)
        return hits

    async def nearest_ids(
        self, vectors: Vectors, k: int, ef: int, tenant: str
    ) -> list[list[tuple[str, float]]]:
        """(id, score) of the top k of each vector under the tenant filter, in planned batches
        through the index (no payloads): what write verification asks."""
        where = conditions(tenant, {})
        out: list[list[tuple[str, float]]] = []
        for i in range(0, len(vectors), NEAREST_BATCH):
            found = await self._query(vectors[i : i + NEAREST_BATCH], k, ef, where, False, False)
            out.extend([(c.id, c.score) for c in hits] for hits in found)
        return out

    async def existing(self, ids: list[str]) -> set[str]:
        """Which of `ids` are points of the collection now."""
        return set(await self._retrieve(ids, False))

    async def payloads(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """The payload of each of `ids` that is a point now."""
        return await self._retrieve(ids, True)

    async def count(self, tenant: str | None = None, filters: Filters | None = None) -> int:
        """Points of `tenant` (all tenants if None) matching `filters`, counted exactly."""
        return await self._count(conditions(tenant, filters or {}))

    async def ping(self) -> None:
        """Succeeds when the backend answers and the collection exists; raises a DependencyError
        otherwise (DependencyUnavailable for a missing collection). Reads no points, so it is
        cheap enough for a readiness probe."""
        if not await self._exists():
            raise DependencyUnavailable(DEPENDENCY, f"collection {self.collection!r} does not exist")

    async def optimize(self) -> None:
        """After a batch of writes: returns once every write so far is durable, counted and found
        by exact search, and the index is being brought up to date. The embedded engine builds
        its HNSW segments here and returns when they are built; a server builds them in the
        background by itself (its info() status is "yellow" until done). Index answers may still
        come back short: the pipeline checks (app/search.py). Raises DependencyUnavailable when
        the collection does not exist, on both backends."""
        await self.ping()
        await self._build_index()

    @abstractmethod
    async def info(self) -> dict[str, Any]:
        """The collection as the backend reports it, in the shape of Qdrant's
        `GET /collections/<name>` result (shared.collection_info). A field the backend cannot
        report is None, never a value taken from our settings. DependencyUnavailable when the
        collection does not exist."""
