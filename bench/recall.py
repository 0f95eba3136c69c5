"""Recall@10 of the S4 shards against exact search, next to their in-process search latency.

Speed figures mean nothing without it. For each shard, the same distinct queries (embedded by
the model) are searched through the HNSW index with the gateway's default `ef` and exactly
(`exact=True`, a scan), under three filters: the tenant alone, tenant + one payload key (a topic),
and tenant + a list of 20 document ids. Recall@10 = |index top 10 ∩ exact top 10| / |exact top
10|, per query; the table gives the mean, the worst query and how many queries fell below 0.9.

`python -m bench.recall [--sizes 2000,20000] [--ef 64,128]` measures it alone; `make bench`
records it with every run (before the servers start: one process owns a shard).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.clients.vectorstore import EdgeStore
from app.settings import QdrantSettings
from app.types import Filters

QUERIES = 200
ID_LIST = 20


async def _measure(
    root: Path,
    collection: str,
    tenant: str,
    queries: npt.NDArray[np.float32],
    rows: dict[str, list[Filters]],
    ef: int,
) -> dict[str, dict[str, float]]:
    store = EdgeStore(QdrantSettings(path=root, collection=collection))
    out: dict[str, dict[str, float]] = {}
    try:
        for name, filters in rows.items():
            recalls: list[float] = []
            took: list[float] = []
            for q, flt in zip(queries, filters, strict=True):
                t0 = time.perf_counter()
                hits = await store.search(q, 10, ef, tenant, flt)
                took.append(time.perf_counter() - t0)
                exact = await store.search(q, 10, ef, tenant, flt, exact=True)
                want = {h.id for h in exact}
                recalls.append(len(want & {h.id for h in hits}) / len(want) if want else 1.0)
            r = np.array(recalls)
            out[name] = {
                "recall_mean": round(float(r.mean()), 4),
                "recall_min": round(float(r.min()), 4),
                "below_0_9": int((r < 0.9).sum()),
                "queries": len(recalls),
                "search_p50_ms": round(float(np.percentile(took, 50)) * 1000, 3),
            }
    finally:
        await store.aclose()
    return out


def filter_rows(passages: list[dict[str, str]], n: int, seed: int) -> dict[str, list[Filters]]:
    """For each of `n` queries: no extra filter, one topic, and 20 random document ids."""
    rng = random.Random(seed)
    topics = sorted({p["topic"] for p in passages})
    ids = [p["id"] for p in passages]
    return {
        "tenant": [{} for _ in range(n)],
        "tenant+topic": [{"topic": [rng.choice(topics)]} for _ in range(n)],
        "tenant+20 ids": [{"doc_id": rng.sample(ids, ID_LIST)} for _ in range(n)],
    }


def measure(
    root: Path,
    collection: str,
    tenant: str,
    passages: list[dict[str, str]],
    query_vectors: npt.NDArray[np.float32],
    ef: int,
    seed: int = 5,
) -> dict[str, dict[str, float]]:
    rows = filter_rows(passages, len(query_vectors), seed)
    return asyncio.run(_measure(root, collection, tenant, query_vectors, rows, ef))


def embed_queries(model_dir: Path, queries: list[str]) -> npt.NDArray[np.float32]:
    from app.clients.embedder import OnnxEmbedder

    embedder = OnnxEmbedder(model_dir, cache_size=0)
    return np.concatenate([embedder.encode(queries[i : i + 32]) for i in range(0, len(queries), 32)])


def render(recall: dict[str, Any]) -> list[str]:
    """Markdown rows: size, filter, ef, mean and worst recall@10, queries under 0.9, search p50."""
    lines = [
        "| points | filter | ef | recall@10 mean | worst query | queries < 0.9 | index search p50 ms |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for size, by_ef in sorted(recall.items(), key=lambda kv: int(kv[0])):
        for ef, rows in sorted(by_ef.items(), key=lambda kv: int(kv[0])):
            for name, r in rows.items():
                lines.append(
                    f"| {int(size):,} | {name} | {ef} | {r['recall_mean']:.4f} | {r['recall_min']:.2f} "
                    f"| {r['below_0_9']} of {r['queries']} | {r['search_p50_ms']:.2f} |"
                )
    return lines


def main(argv: list[str] | None = None) -> int:
    from bench import data
    from bench.run import CORPUS_N, FULL_SIZES, QUERY_SEED

    parser = argparse.ArgumentParser(prog="python -m bench.recall", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=",".join(str(s) for s in FULL_SIZES), help="shard sizes")
    parser.add_argument(
        "--ef", default=str(QdrantSettings().ef_default), help="hnsw_ef values, comma-separated"
    )
    parser.add_argument("--model-dir", type=Path, default=data.ROOT / "data/models/all-MiniLM-L6-v2")
    args = parser.parse_args(argv)
    corpus = data.load_corpus(CORPUS_N, args.model_dir)
    queries = data.distinct_queries(corpus.passages, QUERY_SEED)
    vectors = embed_queries(args.model_dir, [next(queries) for _ in range(QUERIES)])
    out: dict[str, dict[str, Any]] = {}
    for size in (int(s) for s in args.sizes.split(",")):
        sized = data.load_corpus(size, args.model_dir)
        root = data.shard_root(sized, size)
        for ef in (int(e) for e in args.ef.split(",")):
            out.setdefault(str(size), {})[str(ef)] = measure(
                root, data.COLLECTION, data.TENANT, sized.passages, vectors, ef
            )
    print("\n".join(render(out)))
    print(json.dumps(out), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
