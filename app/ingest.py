"""Ingestion: documents -> chunks -> embeddings -> points (payload `text`, `doc_id`, `chunk`,
`chunks`, `tenant`, `content_hash` and the caller's fields), in batches.

Used by scripts/qdrant_bootstrap.py and the evaluation tool, so everything that writes the
collection writes the same payload (text, doc_id, tenant, source, content_hash, extras).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from app.chunking import Chunker
from app.clients.embedder import Embedder
from app.clients.vectorstore import VectorStore
from app.search import VERIFY_EF, forget_points, verify_writes
from app.types import PointIn, point_id

RESERVED = frozenset({"text", "doc_id", "tenant", "content_hash", "doc_hash", "chunk", "chunks"})
EXISTING_BATCH = 1024


@dataclass(slots=True)
class Document:
    doc_id: str
    text: str
    tenant: str = "default"
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def doc_hash(doc: Document, chunker: Chunker | None) -> str:
    """Everything a document's points are made of: its text, its payload and how it is chunked.
    A document written again with the same hash is skipped without re-embedding."""
    how = "whole" if chunker is None else f"{chunker.max_tokens}/{chunker.overlap}"
    extra = json.dumps(doc.extra, sort_keys=True, ensure_ascii=False)
    return content_hash("\x00".join((doc.text, doc.source, extra, how)))


def to_payload(
    doc: Document, text: str | None = None, chunk: int = 0, chunks: int = 1, whole_hash: str = ""
) -> dict[str, Any]:
    """The payload of one chunk of `doc` (the whole document when `text` is None)."""
    text = doc.text if text is None else text
    payload = {k: v for k, v in doc.extra.items() if k not in RESERVED}
    payload.update(
        text=text,
        doc_id=doc.doc_id,
        chunk=chunk,
        chunks=chunks,
        tenant=doc.tenant,
        source=doc.source,
        content_hash=content_hash(text),
        doc_hash=whole_hash or doc_hash(doc, None),
    )
    return payload


@dataclass(frozen=True, slots=True)
class IngestStats:
    documents: int  # documents given (after de-duplication)
    chunks: int  # chunks of the documents written
    upserted: int  # points written
    skipped_unchanged: int  # documents whose points were already exactly these


@dataclass(slots=True)
class Piece:
    doc: Document
    chunk: int
    chunks: int
    text: str


def split(docs: Iterable[Document], chunker: Chunker | None) -> list[Piece]:
    """Every chunk of every document; one piece a document without a chunker."""
    pieces: list[Piece] = []
    for d in docs:
        texts = [d.text] if chunker is None else [c.text for c in chunker.split(d.text)]
        pieces.extend(Piece(d, i, len(texts), t) for i, t in enumerate(texts))
    return pieces


async def document_point_ids(store: VectorStore, tenant: str, doc_id: str, at_least: int = 1) -> list[str]:
    """The ids of every chunk a document has in the store (chunks are numbered 0..n-1)."""
    n = max(at_least, await store.count(tenant, {"doc_id": [doc_id]}))
    return [point_id(tenant, doc_id, i) for i in range(n)]


async def _stored_hashes(store: VectorStore, docs: list[Document]) -> dict[tuple[str, str], str]:
    """(tenant, doc id) -> the stored `doc_hash` of every document that has points already
    (its first chunk's; "" for points written before documents had one)."""
    found: dict[tuple[str, str], str] = {}
    for i in range(0, len(docs), EXISTING_BATCH):
        batch = docs[i : i + EXISTING_BATCH]
        ids = {point_id(d.tenant, d.doc_id): (d.tenant, d.doc_id) for d in batch}
        for pid, payload in (await store.payloads(list(ids))).items():
            found[ids[pid]] = str(payload.get("doc_hash", ""))
    return found


async def _drop_stale_chunks(
    store: VectorStore, existed: list[Document], chunks: dict[tuple[str, str], int]
) -> None:
    """A document written again with fewer chunks than before loses the chunks it no longer has.
    Only documents that existed before the write are counted."""
    for d in existed:
        stale = (await document_point_ids(store, d.tenant, d.doc_id))[chunks[(d.tenant, d.doc_id)] :]
        if stale:
            await store.delete(stale)
            await forget_points(store, d.tenant, stale)


async def ingest_documents(
    store: VectorStore,
    embedder: Embedder,
    docs: Iterable[Document],
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
    verify: bool = True,
    verify_ef: int = VERIFY_EF,
    on_missed: Callable[[dict[str, int]], None] | None = None,
    chunker: Chunker | None = None,
    skip_unchanged: bool = True,
    optimize: bool = True,
) -> IngestStats:
    """Chunk, embed and upsert `docs`, drop chunks a shorter new version no longer has, then build
    the index. With `skip_unchanged`, documents whose stored points carry the same `doc_hash`
    (same text, payload and chunking) are not embedded again. `progress` gets chunk counts.

    A (tenant, doc id) given twice is one document: the later one wins, as if upserted in order.
    """
    await store.ensure_collection(embedder.dim, embedder.id)
    latest = list({(d.tenant, d.doc_id): d for d in docs}.values())
    hashes = {(d.tenant, d.doc_id): doc_hash(d, chunker) for d in latest}
    # what these documents look like in the store, asked before anything is written
    stored = await _stored_hashes(store, latest)
    skipped = 0
    if skip_unchanged:
        todo = [d for d in latest if stored.get((d.tenant, d.doc_id)) != hashes[(d.tenant, d.doc_id)]]
        skipped = len(latest) - len(todo)
    else:
        todo = latest
    pieces = split(todo, chunker)
    # similar lengths in one batch waste less compute on padding
    ordered = sorted(pieces, key=lambda p: len(p.text))
    written = 0
    vectors_by_tenant: dict[str, dict[str, npt.NDArray[np.float32]]] = {}
    for i in range(0, len(ordered), batch_size):
        batch = ordered[i : i + batch_size]
        vectors = await embedder.embed_batch([p.text for p in batch])
        points = [
            PointIn(
                point_id(p.doc.tenant, p.doc.doc_id, p.chunk),
                vectors[j],
                to_payload(p.doc, p.text, p.chunk, p.chunks, hashes[(p.doc.tenant, p.doc.doc_id)]),
            )
            for j, p in enumerate(batch)
        ]
        await store.upsert(points)
        for point, p in zip(points, batch, strict=True):
            vectors_by_tenant.setdefault(p.doc.tenant, {})[point.id] = point.vector
        written += len(batch)
        if progress is not None:
            progress(len(batch))
    chunks = {(p.doc.tenant, p.doc.doc_id): p.chunks for p in pieces}
    await _drop_stale_chunks(store, [d for d in todo if (d.tenant, d.doc_id) in stored], chunks)
    if optimize:
        await store.optimize()
    if verify:
        # read your writes: every point is found by its own vector, or its tenant is searched
        # exactly until it is (app/search.py)
        missed = await verify_writes(store, vectors_by_tenant, verify_ef)
        if missed and on_missed is not None:
            on_missed(missed)
    return IngestStats(len(latest), len(pieces), written, skipped)
