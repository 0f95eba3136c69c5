"""The eval collection: built once with the ingest code, cached, copied per run.

The cache lives in `<cache dir>/<dataset>-<key>/`, where the key hashes everything the built
vectors depend on: the corpus file's bytes, the embedding model and revision, the HNSW build
parameters, the tenant and the passage format. Change any of them and a new entry is built;
nothing else invalidates it (delete the directory, or pass --rebuild, to force a rebuild).
A build goes to a temporary directory first and is renamed into place when complete, so an
interrupted build never leaves a half-filled entry behind.

Each eval run works on a private copy of the entry: the embedded engine owns the directory it
opens and writes to it, so the cached entry stays pristine and two runs can share it.

Building is embedding-bound (5,000 passages of ~80 tokens). On 2 shared cores the fastest way
measured was one single-threaded ONNX session per core, each embedding half of a batch of 16 at
the same time: about twice the rate of one session with two intra-op threads and batches of 64
(small batches waste less on padding and fit the caches; independent sessions never wait on each
other the way intra-op threads of one call do when the machine is busy). The vectors are the
same as one session's.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.clients.embedder import Embedder, OnnxEmbedder, embedder_from_settings
from app.clients.vectorstore import vectorstore_from_settings
from app.clients.vectorstore.files import copy_tree
from app.ingest import Document, ingest_documents
from app.settings import EmbedderSettings, QdrantSettings

COLLECTION = "eval"
FORMAT = "beir-title-newline-text@1"  # how passages are built; bump when beir_docs changes


@dataclass(slots=True)
class Built:
    path: Path  # the cache entry; the collection is at path / "qdrant" / COLLECTION
    meta: dict[str, Any]
    cached: bool  # True when this run reused an entry instead of building it


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_key(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


class ShardedEmbedder:
    """For the build: `sessions` single-threaded ONNX sessions; a batch is split between them
    and embedded in parallel (onnxruntime and the tokenizer release the GIL)."""

    def __init__(self, settings: EmbedderSettings, sessions: int) -> None:
        self._parts = [
            OnnxEmbedder(settings.model_dir, threads=1, cache_size=0, variant=settings.variant)
            for _ in range(max(1, sessions))
        ]
        self.id = self._parts[0].id
        self.dim = self._parts[0].dim

    async def embed(self, text: str) -> npt.NDArray[np.float32]:
        vectors = await self.embed_batch([text])
        first: npt.NDArray[np.float32] = vectors[0]
        return first

    async def embed_batch(self, texts: list[str]) -> npt.NDArray[np.float32]:
        size = max(1, math.ceil(len(texts) / len(self._parts)))
        slices = [texts[i : i + size] for i in range(0, len(texts), size)]
        parts = await asyncio.gather(*(p.embed_batch(s) for p, s in zip(self._parts, slices, strict=False)))
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), dtype=np.float32)

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        for p in self._parts:
            await p.aclose()


def build_embedder(settings: EmbedderSettings, sessions: int) -> Embedder:
    if settings.kind == "onnx" and sessions > 1:
        return ShardedEmbedder(settings, sessions)
    return embedder_from_settings(settings)


def default_sessions() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 4))


class _Progress:
    def __init__(self, total: int, quiet: bool) -> None:
        self.total, self.quiet, self.done, self.t0 = total, quiet, 0, time.monotonic()
        self._last = 0.0

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.quiet or (now - self._last < 15 and self.done < self.total):
            return
        self._last = now
        rate = self.done / max(1e-9, now - self.t0)
        print(f"  embedded {self.done}/{self.total} passages ({rate:.0f}/s)", file=sys.stderr, flush=True)


async def build_or_load(
    *,
    name: str,
    corpus_file: Path,
    docs: list[Document],
    embedder_settings: EmbedderSettings,
    qdrant_settings: QdrantSettings,
    tenant: str,
    cache_dir: Path,
    batch_size: int,
    sessions: int = 1,
    rebuild: bool = False,
    quiet: bool = False,
) -> Built:
    embedder = build_embedder(embedder_settings, sessions)
    try:
        inputs = {
            "corpus_sha256": file_sha256(corpus_file),
            "embedder": embedder.id,
            "dim": embedder.dim,
            "hnsw_m": qdrant_settings.hnsw_m,
            "hnsw_ef_construct": qdrant_settings.hnsw_ef_construct,
            "tenant": tenant,
            "format": FORMAT,
        }
        entry = cache_dir / f"{name}-{cache_key(inputs)}"
        if not rebuild and (meta := _read_meta(entry)) is not None:
            return Built(entry, meta, cached=True)

        tmp = _fresh_dir(cache_dir / f".build-{entry.name}-{os.getpid()}")
        settings = qdrant_settings.model_copy(
            update={"url": None, "path": tmp / "qdrant", "collection": COLLECTION}
        )
        store = vectorstore_from_settings(settings)
        t0 = time.perf_counter()
        try:
            try:
                # whole passages, as the judged sets were made: the eval measures ranking
                stats = await ingest_documents(
                    store, embedder, docs, batch_size, _Progress(len(docs), quiet), skip_unchanged=False
                )
                written = stats.upserted
            finally:
                await store.aclose()
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        seconds = time.perf_counter() - t0
        meta = {
            **inputs,
            "dataset": name,
            "points": written,
            "build_seconds": round(seconds, 1),
            "passages_per_second": round(written / seconds, 1) if seconds else None,
            "batch_size": batch_size,
            "embed_sessions": sessions if isinstance(embedder, ShardedEmbedder) else 1,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        return Built(entry, _publish(tmp, entry, meta, replace=rebuild), cached=False)
    finally:
        await embedder.aclose()


def _read_meta(entry: Path) -> dict[str, Any] | None:
    meta_file = entry / "meta.json"
    return dict(json.loads(meta_file.read_text())) if meta_file.is_file() else None


def _fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _publish(tmp: Path, entry: Path, meta: dict[str, Any], replace: bool) -> dict[str, Any]:
    """Move a finished build into place (meta.json last written, so an entry with one is whole)."""
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    if replace:
        shutil.rmtree(entry, ignore_errors=True)
    try:
        os.replace(tmp, entry)
    except OSError:  # another run published the same entry first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        return _read_meta(entry) or meta
    return meta


def private_copy(built: Built, dest: Path) -> Path:
    """Copy the cached collection to `dest`; returns the qdrant path to open it from."""
    copy_tree(built.path / "qdrant", dest / "qdrant")
    return dest / "qdrant"
