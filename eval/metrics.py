"""Ranking metrics with trec_eval's definitions, for graded judgments.

- nDCG@k (trec_eval `ndcg_cut`): gain = the judged grade (linear, grades <= 0 gain nothing),
  discount log2(rank + 1) with ranks from 1; the ideal DCG ranks ALL judged passages of the
  query by grade, not only the retrieved ones.
- Recall@k: judged-relevant passages (grade >= 1) in the top k / all judged-relevant passages.
- MRR@k: 1 / rank of the first judged-relevant passage in the top k, 0 if none.

Conventions, each tested:
- A query with no judged-relevant passage is excluded from every mean and counted
  (`Summary.unjudged`); a judged query the run has no ranking for scores 0 (trec_eval -c).
- A ranking is the order the system returned. A passage id appearing again lower in the same
  ranking keeps its rank slot but earns nothing: repeating a passage wastes a slot the reader
  sees, and can never raise a score.
- Fewer than k results: the missing ranks earn nothing.
- Scores to ranking (`rank_by_score`, used by the BM25 baseline): by score, descending; equal
  scores are broken by passage id in decreasing lexicographic order, as trec_eval does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

Qrels = Mapping[str, Mapping[str, int]]  # query id -> passage id -> grade
METRICS = ("ndcg@10", "recall@10", "recall@50", "mrr@10")


def rank_by_score(scores: Mapping[str, float]) -> list[str]:
    """Passage ids by score descending; ties by id descending (trec_eval's order)."""
    by_id = sorted(scores, reverse=True)
    return sorted(by_id, key=lambda d: scores[d], reverse=True)  # stable: keeps the id order on ties


def _first_occurrences(ranking: Sequence[str], k: int) -> list[str | None]:
    """The top k slots, with repeats of an earlier passage replaced by None."""
    seen: set[str] = set()
    out: list[str | None] = []
    for d in ranking[:k]:
        out.append(None if d in seen else d)
        seen.add(d)
    return out


def dcg(grades: Iterable[float]) -> float:
    return sum(g / math.log2(i + 2) for i, g in enumerate(grades) if g > 0)


def ndcg_at_k(ranking: Sequence[str], judged: Mapping[str, int], k: int = 10) -> float:
    ideal = dcg(sorted((g for g in judged.values() if g > 0), reverse=True)[:k])
    if ideal == 0:
        raise ValueError("no judged-relevant passage: the query has no nDCG")
    got = dcg(judged.get(d, 0) if d is not None else 0 for d in _first_occurrences(ranking, k))
    return got / ideal


def recall_at_k(ranking: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    relevant = {d for d, g in judged.items() if g >= 1}
    if not relevant:
        raise ValueError("no judged-relevant passage: the query has no recall")
    return len(relevant.intersection(d for d in ranking[:k])) / len(relevant)


def mrr_at_k(ranking: Sequence[str], judged: Mapping[str, int], k: int = 10) -> float:
    for i, d in enumerate(_first_occurrences(ranking, k), start=1):
        if d is not None and judged.get(d, 0) >= 1:
            return 1.0 / i
    return 0.0


def has_relevant(judged: Mapping[str, int] | None) -> bool:
    return judged is not None and any(g >= 1 for g in judged.values())


def query_metrics(ranking: Sequence[str], judged: Mapping[str, int]) -> dict[str, float]:
    return {
        "ndcg@10": ndcg_at_k(ranking, judged, 10),
        "recall@10": recall_at_k(ranking, judged, 10),
        "recall@50": recall_at_k(ranking, judged, 50),
        "mrr@10": mrr_at_k(ranking, judged, 10),
    }


@dataclass(slots=True)
class Summary:
    means: dict[str, float]
    per_query: dict[str, dict[str, float]]
    judged: int  # queries in the means
    unjudged: int  # queries asked but without a judged-relevant passage: excluded
    missing: list[str] = field(default_factory=list)  # judged queries the run did not answer: 0


def evaluate(run: Mapping[str, Sequence[str]], qrels: Qrels, queries: Iterable[str]) -> Summary:
    """Mean metrics over the queries of `queries` that have a judged-relevant passage."""
    per_query: dict[str, dict[str, float]] = {}
    unjudged = 0
    missing: list[str] = []
    for qid in queries:
        judged = qrels.get(qid)
        if judged is None or not has_relevant(judged):
            unjudged += 1
            continue
        if qid not in run:
            missing.append(qid)
        per_query[qid] = query_metrics(run.get(qid, []), judged)
    n = len(per_query)
    means = {m: (sum(q[m] for q in per_query.values()) / n if n else 0.0) for m in METRICS}
    return Summary(means, per_query, n, unjudged, missing)


def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (numpy's default), p in [0, 100]."""
    if not values:
        return math.nan
    xs = sorted(values)
    pos = (len(xs) - 1) * p / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)
