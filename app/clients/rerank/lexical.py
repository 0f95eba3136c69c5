"""The default reranker: BM25 over the candidate passages, fused with the vector score.

Two fusions (`RAG_RERANKER__FUSION`), BM25's document frequencies taken over the candidates:

- `rrf` (default), weighted reciprocal-rank fusion: fused = 1 / (c + dense rank) + w / (c + BM25
  rank), ranks from 1, tied scores sharing the best rank of their group, c = `rrf_k` (60, as
  Cormack et al.); a passage with no query term is not in the BM25 ranking (adds 0), as a
  document missing from one result list of a hybrid search. Only ranks count, so neither
  ranking's score scale nor the number of candidates changes how far lexical evidence can move
  a passage: with w = 0.2 and c = 60 the BM25 winner gains at most 0.2/61 on any other passage,
  enough to enter the top 10 from dense rank 30 at best (README, "Quality").
- `minmax`: fused = (1 - w) * minmax(vector score) + w * minmax(BM25). Min-max stretches both
  to [0, 1] over the candidates, so the more candidates, the closer the dense scores of the top
  ten get and the more BM25 decides among them: out of domain it made answers worse.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Sequence
from typing import Literal

from cachetools import LRUCache

from app.clients.rerank.pool import PooledReranker
from app.clients.rerank.tokenize import tokenize
from app.settings import RerankerSettings
from app.types import Candidate

DocStats = tuple[int, Counter[str]]  # (length in tokens, term frequencies)


def _minmax(values: Sequence[float]) -> list[float]:
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        return [0.0] * len(values)
    return [(v - lo) / (hi - lo) for v in values]


def doc_stats(text: str) -> DocStats:
    tokens = tokenize(text)
    return len(tokens), Counter(tokens)


def bm25_scores(query: str, texts: Sequence[str], k1: float, b: float) -> list[float]:
    """BM25 of `query` against each text, with document frequencies over `texts` themselves."""
    return bm25_from_stats(set(tokenize(query)), [doc_stats(t) for t in texts], k1, b)


def bm25_from_stats(terms: set[str], docs: Sequence[DocStats], k1: float, b: float) -> list[float]:
    n = len(docs)
    if not terms or n == 0:
        return [0.0] * n
    avgdl = sum(length for length, _ in docs) / n or 1.0
    df = {t: sum(1 for _, tf in docs if t in tf) for t in terms}
    idf = {t: math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5)) for t in terms}
    out = []
    for length, tf in docs:
        norm = k1 * (1 - b + b * length / avgdl)
        out.append(sum(idf[t] * tf[t] * (k1 + 1) / (tf[t] + norm) for t in terms if t in tf))
    return out


def _ranks(values: Sequence[float]) -> list[int]:
    """1 + how many values are strictly greater: equal values share the best rank of their group."""
    order = sorted(values, reverse=True)
    first: dict[float, int] = {}
    for i, v in enumerate(order):
        first.setdefault(v, i + 1)
    return [first[v] for v in values]


def rrf(dense: Sequence[float], lexical: Sequence[float], weight: float, k: int) -> list[float]:
    """1 / (k + dense rank) + weight / (k + lexical rank), per candidate; a candidate with no
    lexical score (no query term) is not in the lexical ranking and gets nothing from it."""
    return [
        1.0 / (k + rd) + (weight / (k + rl) if x > 0 else 0.0)
        for rd, rl, x in zip(_ranks(dense), _ranks(lexical), lexical, strict=True)
    ]


def _stats_key(c: Candidate) -> tuple[str, str]:
    # a changed passage has a new content hash, so it is never scored with stale statistics
    return c.id, str(c.payload.get("content_hash") or c.text)


class LexicalReranker(PooledReranker):
    """BM25 over the candidates fused with the vector score: by reciprocal rank (`rrf`, the
    default) or by min-max normalised scores (`minmax`), see the module doc.

    Token statistics of passages are cached by (point id, content hash): tokenizing the 50
    candidates is most of a rerank's cost and does not depend on the query. The cache is an LRU
    of `stats_cache_size` passages (about 2.6 KB an entry for MS MARCO-sized passages, so the
    default 10,000 stay near 26 MB), shared by the pool's workers under a lock.
    """

    def __init__(
        self,
        weight: float,
        k1: float,
        b: float,
        concurrency: int = 2,
        stats_cache_size: int = 10_000,
        *,
        fusion: Literal["rrf", "minmax"] = "rrf",
        rrf_k: int = 60,
    ) -> None:
        super().__init__(concurrency, "rerank")
        self.weight = weight
        self.k1 = k1
        self.b = b
        self.fusion = fusion
        self.rrf_k = rrf_k
        # the tokenizer's version (other terms, other scores for the same parameters): v2 plural
        # folding, v3 words of every script, v4 tokens NFKC after casefolding and mark removal
        how = f"rrf{rrf_k}" if fusion == "rrf" else "minmax"
        self.id = f"lexical-bm25@v4:{how}:w={weight:g}:k1={k1:g}:b={b:g}"
        self._stats: LRUCache[tuple[str, str], DocStats] = LRUCache(maxsize=stats_cache_size)
        self._stats_lock = threading.Lock()

    @classmethod
    def from_settings(cls, s: RerankerSettings) -> LexicalReranker:
        return cls(s.fusion_weight, s.bm25_k1, s.bm25_b, s.concurrency, fusion=s.fusion, rrf_k=s.rrf_k)

    def score_sync(self, query: str, candidates: Sequence[Candidate]) -> list[float]:
        if not candidates:
            return []
        stats = self._doc_stats(candidates)
        bm25 = bm25_from_stats(set(tokenize(query)), stats, self.k1, self.b)
        w = self.weight
        if self.fusion == "rrf":
            return rrf([c.score for c in candidates], bm25, w, self.rrf_k)
        lexical, dense = _minmax(bm25), _minmax([c.score for c in candidates])
        return [(1 - w) * d + w * x for d, x in zip(dense, lexical, strict=True)]

    def _doc_stats(self, candidates: Sequence[Candidate]) -> list[DocStats]:
        """The candidates' token statistics, from the cache where it has them. The lock is taken
        once for all the look-ups (a lock and an LRU update per passage cost more than the
        cache saves); a miss is tokenized outside it."""
        keys = [_stats_key(c) for c in candidates]
        with self._stats_lock:
            found = [self._stats.get(k) for k in keys]
        out: list[DocStats] = []
        for c, key, hit in zip(candidates, keys, found, strict=True):
            if hit is None:
                hit = doc_stats(c.text)
                with self._stats_lock:
                    self._stats[key] = hit
            out.append(hit)
        return out
