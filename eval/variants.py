"""Fusion variants compared offline on the same dense candidates (README, "Variants measured and
rejected").

    python -m eval.variants --data DIR[,DIR...] [--k 20,50,100] [--prf]

For every judged query the dense candidates (the largest k, with their vector scores and texts)
are fetched once through POST /rag with `"rerank": false`; every variant then reorders the first
k of them with the reranker's own tokenizer and BM25 (document frequencies over the candidates),
so a variant costs no gateway run. The default's row gives the same rankings as `make eval`.
Prints, per variant, the nDCG@10 delta against dense-only per dataset at the middle k, and the
worst delta at that k and over every k. `--prf` adds dense pseudo-relevance feedback (Rocchio:
the query vector plus beta times the mean of the top m candidates' vectors, the candidates then
ranked by cosine to it), alone and under the default fusion; it embeds every candidate again
(minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from app.clients.embedder import OnnxEmbedder
from app.clients.rerank.lexical import _minmax, _ranks, bm25_from_stats, doc_stats, rrf
from app.clients.rerank.tokenize import tokenize
from app.settings import Settings
from eval import beir
from eval.collection import build_or_load, default_sessions, private_copy
from eval.gateway import running_gateway
from eval.metrics import evaluate, has_relevant
from eval.multi import dataset_dirs
from eval.run import eval_settings

Fusion = Callable[[Sequence[float], Sequence[float]], list[float]]
Candidates = dict[str, list[tuple[str, float, str]]]  # query id -> (passage id, vector score, text)
Vectors = dict[str, tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]]  # query, candidates
# name -> (top m, beta, then RRF with BM25 at the default weight)
PRF = {
    "dense PRF (Rocchio, top 3, beta 0.5)": (3, 0.5, False),
    "dense PRF (Rocchio, top 5, beta 1)": (5, 1.0, False),
    "dense PRF (top 3, beta 0.5), then RRF w=0.2": (3, 0.5, True),
}


def _z(values: Sequence[float]) -> list[float]:
    mean, sd = statistics.fmean(values), statistics.pstdev(values)
    return [0.0] * len(values) if sd < 1e-12 else [(v - mean) / sd for v in values]


def _peak(values: Sequence[float]) -> float:
    """How decisively a ranking picks its best candidate: (max - mean) / standard deviation."""
    sd = statistics.pstdev(values)
    return 0.0 if sd < 1e-12 else (max(values) - statistics.fmean(values)) / sd


def _minmax_fusion(w: float) -> Fusion:
    return lambda d, b: [(1 - w) * x + w * y for x, y in zip(_minmax(d), _minmax(b), strict=True)]


def _cosine_plus(lam: float) -> Fusion:
    return lambda d, b: [x + lam * (y / max(b) if max(b) > 0 else 0.0) for x, y in zip(d, b, strict=True)]


def _rrf_all_ranked(d: Sequence[float], b: Sequence[float]) -> list[float]:
    # every candidate in the BM25 ranking, term-less ones in vector order
    by_b = sorted(range(len(b)), key=lambda i: -b[i])
    rank_b = {i: n + 1 for n, i in enumerate(by_b)}
    return [1 / (60 + rd) + 0.2 / (60 + rank_b[i]) for i, rd in enumerate(_ranks(d))]


VARIANTS: dict[str, Fusion] = {
    "dense only": lambda d, b: list(d),
    "RRF w=0.2, c=60 (default)": lambda d, b: rrf(d, b, 0.2, 60),
    "RRF w=0.1": lambda d, b: rrf(d, b, 0.1, 60),
    "RRF w=0.3": lambda d, b: rrf(d, b, 0.3, 60),
    "RRF w=0.5": lambda d, b: rrf(d, b, 0.5, 60),
    "RRF w=1": lambda d, b: rrf(d, b, 1.0, 60),
    "RRF w=0.2, term-less passages ranked too": _rrf_all_ranked,
    "RRF, w=0.2*peak(BM25)/peak(dense)": lambda d, b: rrf(
        d, b, min(1.0, 0.2 * _peak(b) / max(_peak(d), 1e-9)), 60
    ),
    "min-max w=0.1": _minmax_fusion(0.1),
    "min-max w=0.2 (old default)": _minmax_fusion(0.2),
    "min-max w=0.3": _minmax_fusion(0.3),
    "min-max, w=0.2*peak(BM25)/peak(dense) <= 0.5": lambda d, b: _minmax_fusion(
        min(0.5, 0.2 * _peak(b) / max(_peak(d), 1e-9))
    )(d, b),
    "z-score w=0.1": lambda d, b: [0.9 * x + 0.1 * y for x, y in zip(_z(d), _z(b), strict=True)],
    "z-score w=0.2": lambda d, b: [0.8 * x + 0.2 * y for x, y in zip(_z(d), _z(b), strict=True)],
    "cosine + 0.02*BM25/max": _cosine_plus(0.02),
    "cosine + 0.05*BM25/max": _cosine_plus(0.05),
    "cosine + 0.1*BM25/max": _cosine_plus(0.1),
    "BM25 over the candidates alone": lambda d, b: [y + 1e-9 * x for x, y in zip(d, b, strict=True)],
}


async def dense_candidates(directory: Path, k: int, cache_dir: Path) -> tuple[beir.Dataset, Candidates]:
    base = Settings()
    ds = beir.load(directory, "test", base.server.default_tenant)
    built = await build_or_load(
        name=ds.name,
        corpus_file=directory / "corpus.jsonl",
        docs=ds.docs,
        embedder_settings=base.embedder,
        qdrant_settings=base.qdrant,
        tenant=base.server.default_tenant,
        cache_dir=cache_dir,
        batch_size=16,
        sessions=default_sessions(),
    )
    out: Candidates = {}
    with tempfile.TemporaryDirectory(prefix="rag-variants-") as tmp:
        settings = eval_settings(base, private_copy(built, Path(tmp)), {"kind": "lexical"})
        async with running_gateway(settings) as (client, _):
            for qid, text in ds.queries.items():
                if not has_relevant(ds.qrels.get(qid)):
                    continue
                resp = await client.post("/rag", json={"q": text, "k": k, "top_n": k, "rerank": False})
                resp.raise_for_status()
                out[qid] = [
                    (str(p["payload"]["doc_id"]), float(p["vector_score"]), str(p["text"]))
                    for p in resp.json()["results"]
                ]
    return ds, out


async def embed_candidates(ds: beir.Dataset, cands: Candidates, model_dir: Path) -> Vectors:
    """Each query's vector and its candidates' vectors, in candidate order (the model embeds
    passages as the ingest did: the same text, the same model)."""
    embedder = OnnxEmbedder(model_dir, threads=default_sessions(), cache_size=0)
    try:
        texts = {pid: text for rows in cands.values() for pid, _, text in rows}
        ids = list(texts)
        by_id: dict[str, npt.NDArray[np.float32]] = {}
        for i in range(0, len(ids), 32):
            for pid, vec in zip(
                ids[i : i + 32], await embedder.embed_batch([texts[x] for x in ids[i : i + 32]]), strict=True
            ):
                by_id[pid] = vec
        qids = list(cands)
        queries = await embedder.embed_batch([ds.queries[q] for q in qids])
    finally:
        await embedder.aclose()
    return {q: (queries[n], np.stack([by_id[pid] for pid, _, _ in cands[q]])) for n, q in enumerate(qids)}


def rocchio(
    query: npt.NDArray[np.float32], cands: npt.NDArray[np.float32], m: int, beta: float
) -> list[float]:
    moved = query + beta * cands[:m].mean(axis=0)
    return [float(x) for x in cands @ (moved / np.linalg.norm(moved))]


def ndcg_by_variant(
    ds: beir.Dataset, cands: Candidates, k: int, vectors: Vectors | None = None
) -> dict[str, float]:
    names = list(VARIANTS) + (list(PRF) if vectors is not None else [])
    runs: dict[str, dict[str, list[str]]] = {v: {} for v in names}
    for qid, rows in cands.items():
        rows = rows[:k]
        dense = [score for _, score, _ in rows]
        bm25 = bm25_from_stats(set(tokenize(ds.queries[qid])), [doc_stats(t) for *_, t in rows], 0.9, 0.4)
        scored = {name: fuse(dense, bm25) for name, fuse in VARIANTS.items()}
        if vectors is not None:
            qvec, matrix = vectors[qid]
            for name, (m, beta, then_rrf) in PRF.items():
                moved = rocchio(qvec, matrix[:k], m, beta)
                scored[name] = rrf(moved, bm25, 0.2, 60) if then_rrf else moved
        for name, fused in scored.items():
            order = sorted(range(len(rows)), key=lambda i: -fused[i])  # stable, as the pipeline's
            runs[name][qid] = [rows[i][0] for i in order]
    return {v: evaluate(run, ds.qrels, cands).means["ndcg@10"] for v, run in runs.items()}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.getLogger("rag").setLevel(logging.ERROR)
    p = argparse.ArgumentParser(prog="python -m eval.variants", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="BEIR dataset directories, as for python -m eval")
    p.add_argument("--k", default="20,50,100", help="candidate counts (default 20,50,100)")
    p.add_argument("--cache-dir", type=Path, default=Path("data/eval-cache"))
    p.add_argument("--prf", action="store_true", help="also dense pseudo-relevance feedback (embeds again)")
    a = p.parse_args(argv)
    ks = [int(x) for x in a.k.split(",")]
    mid = ks[len(ks) // 2]
    res: dict[tuple[str, int], dict[str, float]] = {}
    names = []
    for d in dataset_dirs(a.data):
        ds, cands = asyncio.run(dense_candidates(d, max(ks), a.cache_dir))
        vectors = asyncio.run(embed_candidates(ds, cands, Settings().embedder.model_dir)) if a.prf else None
        names.append(ds.name)
        for k in ks:
            res[(ds.name, k)] = ndcg_by_variant(ds, cands, k, vectors)
    print(
        f"| fusion (nDCG@10 delta vs dense, k={mid}) | "
        + " | ".join(names)
        + f" | worst, k={mid} | worst, all k |"
    )
    print("|---|" + "---:|" * (len(names) + 2))
    for v in res[(names[0], mid)]:
        delta = {(n, k): res[(n, k)][v] - res[(n, k)]["dense only"] for n in names for k in ks}
        if v == "dense only":
            print(f"| {v} (nDCG@10) | " + " | ".join(f"{res[(n, mid)][v]:.3f}" for n in names) + " | | |")
            continue
        worst_mid = min(delta[(n, mid)] for n in names)
        print(
            f"| {v} | "
            + " | ".join(f"{delta[(n, mid)]:+.3f}" for n in names)
            + f" | {worst_mid:+.4f} | {min(delta.values()):+.4f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
