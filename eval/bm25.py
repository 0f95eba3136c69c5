"""The BM25 baseline over the full corpus, computed by the eval tool itself (no gateway).

Same formula and tokenizer as the lexical reranker (app.clients.rerank), but document
frequencies come from the whole corpus instead of one query's candidates:
idf = ln(1 + (N - df + 0.5) / (df + 0.5)), tf part = tf (k1 + 1) / (tf + k1 (1 - b + b dl / avgdl)).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping

from app.clients.rerank.tokenize import tokenize
from eval.metrics import rank_by_score


class BM25Index:
    def __init__(
        self,
        texts: Mapping[str, str],
        k1: float = 0.9,
        b: float = 0.4,
        tokenizer: Callable[[str], list[str]] = tokenize,
    ) -> None:
        self.k1, self.b, self._tokenize = k1, b, tokenizer
        self.ids = list(texts)
        self._postings: dict[str, list[tuple[int, int]]] = defaultdict(list)
        lengths = []
        for i, doc_id in enumerate(self.ids):
            tokens = tokenizer(texts[doc_id])
            lengths.append(len(tokens))
            for term, tf in Counter(tokens).items():
                self._postings[term].append((i, tf))
        n = len(self.ids)
        avgdl = (sum(lengths) / n if n else 0.0) or 1.0
        self._norm = [k1 * (1 - b + b * dl / avgdl) for dl in lengths]
        self._idf = {t: math.log(1 + (n - len(p) + 0.5) / (len(p) + 0.5)) for t, p in self._postings.items()}

    def scores(self, query: str) -> dict[str, float]:
        """Every passage sharing a term with the query, with its score (query terms counted once)."""
        acc: dict[int, float] = defaultdict(float)
        for term in set(self._tokenize(query)):
            idf = self._idf.get(term)
            if idf is None:
                continue
            for i, tf in self._postings[term]:
                acc[i] += idf * tf * (self.k1 + 1) / (tf + self._norm[i])
        return {self.ids[i]: s for i, s in acc.items()}

    def search(self, query: str, k: int) -> list[str]:
        return rank_by_score(self.scores(query))[:k]
