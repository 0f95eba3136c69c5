"""Benchmark data: the corpus, its embeddings, the shards every server reads, and query streams.

Everything built here is cached under bench/.cache/ (gitignored), keyed by size, seed and the
embedding model revision, so only the first run pays for it:

- `embeddings-n<N>-s<seed>-<rev>.npy`: the real ONNX embeddings of the synthetic corpus.
- `shards/v2-n<N>-s<seed>-<rev>/`: an embedded Qdrant (qdrant-edge) collection of N distinct
  synthetic passages with their real embeddings, the gateway's payload (app.ingest.to_payload)
  and HNSW built by optimize(). Every size is real text embedded by the model (the 100k corpus
  takes minutes to embed, once). Earlier shards grew past 2k with perturbed copies of the 2k
  vectors: near-duplicate islands that HNSW cannot reach, so their recall meant nothing
  (bench/recall.py measures it).
- `naive-n<N>-s<seed>-<rev>/`: the same passages and vectors in qdrant-client's local mode for
  the naive peer.

Queries: `distinct_queries()` yields an endless, deterministic stream of distinct queries cut
from the corpus text (word windows), so every request of a "cold" run is a cache miss.
`ZipfMix` draws a skewed, repeating mix over a fixed list of them (S7: the answer cache).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import re
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.clients.vectorstore import EdgeStore
from app.corpus import SAMPLE_QUERIES, generate
from app.ingest import Document, to_payload
from app.settings import QdrantSettings
from app.types import PointIn, point_id

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"


COLLECTION = "rag_docs"
TENANT = "default"
CORPUS_SEED = 0
MAX_REDRAWS = 100_000  # draws in a row without a new query: the space is used up
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'\-]*")


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Corpus:
    passages: list[dict[str, str]]
    vectors: npt.NDArray[np.float32]
    revision: str

    @property
    def n(self) -> int:
        return len(self.passages)


def model_revision(model_dir: Path) -> str:
    return str(json.loads((model_dir / "manifest.json").read_text())["revision"])


def load_corpus(n: int, model_dir: Path, seed: int = CORPUS_SEED) -> Corpus:
    """The synthetic corpus and its real embeddings (computed once, then read from the cache)."""
    passages = generate(n=n, seed=seed)
    rev = model_revision(model_dir)
    path = CACHE / f"embeddings-n{n}-s{seed}-{rev}.npy"
    if path.exists():
        vectors = np.load(path)
        if vectors.shape[0] == n:
            return Corpus(passages, vectors.astype(np.float32, copy=False), rev)
    from app.clients.embedder import OnnxEmbedder

    log(f"embedding {n} passages with the ONNX model (once; cached in {path.relative_to(ROOT)})")
    t0 = time.monotonic()
    embedder = OnnxEmbedder(model_dir, cache_size=0)
    order = sorted(range(n), key=lambda i: len(passages[i]["text"]))
    vectors = np.zeros((n, embedder.dim), dtype=np.float32)
    for i in range(0, n, 64):
        idx = order[i : i + 64]
        vectors[idx] = embedder.encode([passages[j]["text"] for j in idx])
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vectors)
    tmp.replace(path)
    log(f"embedded {n} passages in {time.monotonic() - t0:.1f}s")
    return Corpus(passages, vectors, rev)


def grown(corpus: Corpus, size: int) -> Iterator[tuple[int, dict[str, str], npt.NDArray[np.float32]]]:
    """The first `size` (index, passage, vector) rows of the corpus: real passages only."""
    if size > corpus.n:
        raise ValueError(f"a {size}-point shard needs a corpus of at least {size} passages, not {corpus.n}")
    for i in range(size):
        yield i, corpus.passages[i], corpus.vectors[i]


def _document(p: dict[str, str]) -> Document:
    extra = {k: v for k, v in p.items() if k not in {"id", "text", "source"}}
    return Document(doc_id=p["id"], text=p["text"], tenant=TENANT, source=p["source"], extra=extra)


def shard_root(corpus: Corpus, size: int, seed: int = CORPUS_SEED) -> Path:
    """The RAG_QDRANT__PATH of a built shard of `size` points (built on first use)."""
    root = CACHE / "shards" / f"v2-n{size}-s{seed}-{corpus.revision}"
    done = root / ".complete"
    if done.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    log(f"building a {size}-point shard (once; cached in {root.relative_to(ROOT)})")
    t0 = time.monotonic()
    asyncio.run(_build_shard(root, corpus, size, seed))
    done.write_text(json.dumps({"points": size, "build_s": round(time.monotonic() - t0, 1)}))
    log(f"built the {size}-point shard in {time.monotonic() - t0:.1f}s")
    return root


async def _build_shard(root: Path, corpus: Corpus, size: int, seed: int) -> None:
    store = EdgeStore(QdrantSettings(path=root, collection=COLLECTION))
    try:
        await store.ensure_collection(corpus.vectors.shape[1])
        batch: list[PointIn] = []
        for _, p, v in grown(corpus, size):
            batch.append(PointIn(point_id(TENANT, p["id"]), v, to_payload(_document(p))))
            if len(batch) == 1024:
                await store.upsert(batch)
                batch = []
        if batch:
            await store.upsert(batch)
        await store.optimize()
    finally:
        await store.aclose()


def naive_root(corpus: Corpus, seed: int = CORPUS_SEED) -> Path:
    """A qdrant-client local-mode directory with the same points (for the naive peer)."""
    root = CACHE / f"naive-n{corpus.n}-s{seed}-{corpus.revision}"
    done = root / ".complete"
    if done.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    from qdrant_client import QdrantClient, models

    log(f"loading {corpus.n} points into qdrant-client local mode for the naive peer")
    client = QdrantClient(path=str(root))
    try:
        client.create_collection(
            COLLECTION,
            vectors_config=models.VectorParams(size=corpus.vectors.shape[1], distance=models.Distance.COSINE),
        )
        points = [
            models.PointStruct(
                id=point_id(TENANT, p["id"]), vector=v.tolist(), payload=to_payload(_document(p))
            )
            for _, p, v in grown(corpus, corpus.n)
        ]
        for i in range(0, len(points), 512):
            client.upsert(COLLECTION, points=points[i : i + 512])
    finally:
        client.close()
    done.write_text(json.dumps({"points": corpus.n}))
    return root


def distinct_queries(passages: list[dict[str, str]], seed: int) -> Iterator[str]:
    """Distinct, deterministic queries: the topics' sample queries, then 3-9 word windows of
    passage text. Never repeats within one stream."""
    seen: set[str] = set()
    for qs in SAMPLE_QUERIES.values():
        for q in qs:
            if q not in seen:
                seen.add(q)
                yield q
    rng = random.Random(seed)
    words = [_WORD.findall(p["text"].lower()) for p in passages]
    misses = 0
    while True:
        w = words[rng.randrange(len(words))]
        n = rng.randint(3, 9)
        start = rng.randrange(max(1, len(w) - n))
        q = " ".join(w[start : start + n])
        if q and q not in seen:
            seen.add(q)
            misses = 0
            yield q
        else:
            misses += 1
            if misses > MAX_REDRAWS:  # fail loudly instead of spinning on an exhausted space
                raise RuntimeError(f"no new distinct query after {MAX_REDRAWS} draws ({len(seen)} made)")


def body_lines(queries: Iterator[str], count: int, k: int, rerank: bool) -> list[str]:
    """`count` JSON request bodies, one per line (what the wrk script sends, in order)."""
    extra: dict[str, Any] = {} if rerank else {"rerank": False}
    return [json.dumps({"q": next(queries), "k": k, **extra}) for _ in range(count)]


class ZipfMix:
    """A Zipf-distributed mix over a fixed list of distinct queries: the query of rank r (1-based,
    in list order) is drawn with probability proportional to r**-s. Deterministic for a seed; one
    mix is an endless stream, so successive samples differ but follow the same distribution."""

    def __init__(self, queries: list[str], s: float, seed: int) -> None:
        if not queries:
            raise ValueError("a Zipf mix needs at least one query")
        self.queries = queries
        self.s = s
        self._cum = list(itertools.accumulate(r**-s for r in range(1, len(queries) + 1)))
        self._rng = random.Random(seed)

    def sample(self, count: int) -> list[str]:
        return self._rng.choices(self.queries, cum_weights=self._cum, k=count)

    def body_lines(self, count: int, k: int) -> list[str]:
        """`count` JSON request bodies (rerank on, the default), one per line, for the wrk script."""
        return [json.dumps({"q": q, "k": k}) for q in self.sample(count)]


def zipf_queries(passages: list[dict[str, str]], n: int, seed: int) -> list[str]:
    """The first `n` queries of a distinct_queries() stream: the mix's ranks, most popular first."""
    return list(itertools.islice(distinct_queries(passages, seed), n))
