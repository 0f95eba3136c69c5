"""Ingestion: passages -> embeddings -> points (payload `text`, `doc_id`, `tenant`, `content_hash`
and the caller's fields), in batches.

Used by scripts/qdrant_bootstrap.py and the evaluation tool, so everything that writes the
collection writes the same payload (text, doc_id, tenant, source, content_hash, extras).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from app.clients.embedder import Embedder
from app.clients.vectorstore import VectorStore
from app.search import VERIFY_EF, verify_writes
from app.types import PointIn, point_id

RESERVED = frozenset({"text", "doc_id", "tenant", "content_hash"})


@dataclass(slots=True)
class Document:
    doc_id: str
    text: str
    tenant: str = "default"
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def to_payload(doc: Document) -> dict[str, Any]:
    payload = {k: v for k, v in doc.extra.items() if k not in RESERVED}
    payload.update(
        text=doc.text,
        doc_id=doc.doc_id,
        tenant=doc.tenant,
        source=doc.source,
        content_hash=content_hash(doc.text),
    )
    return payload


async def ingest(
    store: VectorStore,
    embedder: Embedder,
    docs: Iterable[Document],
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
    verify: bool = True,
    verify_ef: int = VERIFY_EF,
    on_missed: Callable[[dict[str, int]], None] | None = None,
) -> int:
    """Embed and upsert `docs`, then build the index. Returns how many points were written.

    A (tenant, doc id) given twice is one point: the later document wins, as if upserted in order.
    """
    await store.ensure_collection(embedder.dim)
    latest = {(d.tenant, d.doc_id): d for d in docs}
    # similar lengths in one batch waste less compute on padding
    ordered = sorted(latest.values(), key=lambda d: len(d.text))
    written = 0
    vectors_by_tenant: dict[str, dict[str, npt.NDArray[np.float32]]] = {}
    for i in range(0, len(ordered), batch_size):
        batch = ordered[i : i + batch_size]
        vectors = await embedder.embed_batch([d.text for d in batch])
        points = [
            PointIn(point_id(d.tenant, d.doc_id), vectors[j], to_payload(d)) for j, d in enumerate(batch)
        ]
        await store.upsert(points)
        for p, d in zip(points, batch, strict=True):
            vectors_by_tenant.setdefault(d.tenant, {})[p.id] = p.vector
        written += len(batch)
        if progress is not None:
            progress(len(batch))
    await store.optimize()
    if verify:
        # read your writes: every point is found by its own vector, or its tenant is searched
        # exactly until it is (app/search.py)
        missed = await verify_writes(store, vectors_by_tenant, verify_ef)
        if missed and on_missed is not None:
            on_missed(missed)
    return written
