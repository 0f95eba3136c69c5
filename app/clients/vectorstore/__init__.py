"""The vector store: one small interface, two Qdrant backends.

- EdgeStore (default, `edge.py`): Qdrant's own engine in-process (`qdrant-edge-py`) on a local
  directory, real HNSW built by `optimize()`. One process owns the directory: run one worker.
- ServerStore (`server.py`): a Qdrant server or cluster by URL through `qdrant-client`'s
  AsyncQdrantClient.

What a call means is written once (`base.py`), the filter, index and info shapes too
(`shared.py`), and each library's exceptions are translated by one table (`errors.py`). Both
create the collection idempotently with the same schema (cosine, HNSW m/ef_construct, keyword
index on `tenant` with is_tenant, and a payload index for every allow-listed filter key, typed as
configured; see docs/ARCHITECTURE.md, "Search integrity") and always filter searches by tenant.

Why every filter key is indexed and full_scan_threshold is Qdrant's default: Qdrant plans a
filtered search from payload-index cardinality. A filter whose points it can count below the
threshold is answered exactly (payload index, then scoring); anything else walks the HNSW graph,
only through points that pass the filter. With the old threshold of 10 KB (6 points at 384 dims)
and no index on `source`/`topic`/`doc_id`, selective filters walked a graph whose filtered part
is disconnected and came back short; and a small tenant's graph rebuilt by `optimize()` after one
upsert was reachable from one point only (measured with qdrant-edge 0.9.0; exact search on the
same shard saw all of them). The pipeline still checks counts and falls back to exact search
(app/search.py): no engine defect may drop passages unseen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from app.clients.vectorstore.base import Vectors
from app.clients.vectorstore.edge import EdgeStore
from app.settings import QdrantSettings
from app.types import Candidate, Filters, PointIn

if TYPE_CHECKING:
    from app.clients.vectorstore.server import ServerStore

__all__ = ["EdgeStore", "ServerStore", "VectorStore", "vectorstore_from_settings"]


class VectorStore(Protocol):
    """What the pipeline, ingest and write verification ask of a store; the meaning of each call,
    the same on both backends, is documented on base.QdrantStore."""

    collection: str

    async def ensure_collection(self, dim: int, embedder: str | None = None) -> bool: ...

    async def check_embedder(self, embedder: str) -> None: ...

    async def ensure_indexes(self) -> list[str]: ...

    async def drop(self) -> None: ...

    async def search(
        self, vector: Vectors, k: int, ef: int, tenant: str, filters: Filters, exact: bool = False
    ) -> list[Candidate]: ...

    async def nearest_ids(
        self, vectors: Vectors, k: int, ef: int, tenant: str
    ) -> list[list[tuple[str, float]]]: ...

    async def existing(self, ids: list[str]) -> set[str]: ...

    async def payloads(self, ids: list[str]) -> dict[str, dict[str, Any]]: ...

    async def upsert(self, points: list[PointIn]) -> None: ...

    async def delete(self, ids: list[str]) -> None: ...

    async def optimize(self) -> None: ...

    async def count(self, tenant: str | None = None, filters: Filters | None = None) -> int: ...

    async def info(self) -> dict[str, Any]: ...

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


def vectorstore_from_settings(s: QdrantSettings) -> VectorStore:
    if s.url:
        return _server_store().from_settings(s)
    return EdgeStore.from_settings(s)


def _server_store() -> type[ServerStore]:
    # imported on first use, not with the package: qdrant-client adds about a second to the
    # start-up of every process, and the default (embedded) backend never needs it
    from app.clients.vectorstore.server import ServerStore

    return ServerStore


def __getattr__(name: str) -> Any:
    """`from app.clients.vectorstore import ServerStore` still works (PEP 562)."""
    if name == "ServerStore":
        return _server_store()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
