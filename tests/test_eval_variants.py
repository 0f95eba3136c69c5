"""eval.variants: the offline fusion comparison ranks the default's way and dense-only's way."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.clients.rerank import LexicalReranker
from app.types import Candidate
from eval import beir
from eval.metrics import evaluate
from eval.variants import VARIANTS, ndcg_by_variant, rocchio

ROWS = [
    ("a", 0.90, "the history of the printing press"),
    ("b", 0.85, "a passage about solar energy and quantum effects"),
    ("c", 0.80, "qubits are the units of quantum computers"),
    ("d", 0.40, "quantum computers use qubits; qubits hold quantum state"),
]


def test_the_default_and_dense_only_rows_rank_as_the_gateway_does() -> None:
    ds = beir.Dataset(
        name="t",
        directory=Path("."),
        docs=[],
        queries={"q": "quantum qubits"},
        qrels={"q": {"c": 2, "d": 3}},
    )
    got = ndcg_by_variant(ds, {"q": list(ROWS)}, k=4)
    assert set(got) == set(VARIANTS)

    def ndcg_of(scores: list[float]) -> float:
        order = sorted(range(len(ROWS)), key=lambda i: -scores[i])
        return evaluate({"q": [ROWS[i][0] for i in order]}, ds.qrels, ["q"]).means["ndcg@10"]

    cands = [Candidate(pid, score, {"text": text}) for pid, score, text in ROWS]
    assert got["dense only"] == ndcg_of([s for _, s, _ in ROWS])
    assert got["RRF w=0.2, c=60 (default)"] == ndcg_of(
        LexicalReranker(0.2, 0.9, 0.4).score_sync("quantum qubits", cands)
    )
    old = LexicalReranker(0.2, 0.9, 0.4, fusion="minmax").score_sync("quantum qubits", cands)
    assert got["min-max w=0.2 (old default)"] == ndcg_of(old)
    # lexical evidence lifts the two passages about qubits over the printing press
    assert got["RRF w=0.2, c=60 (default)"] > got["dense only"]


def test_rocchio_moves_the_query_towards_the_top_candidates() -> None:
    import numpy as np

    from eval.variants import PRF

    q = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    cands = np.array([[0.8, 0.6, 0.0], [0.6, 0.8, 0.0], [0.9, 0.0, 0.436]], dtype=np.float32)
    # beta 0: the candidates' cosines to the query itself
    assert rocchio(q, cands, 1, 0.0) == pytest.approx([0.8, 0.6, 0.9], abs=1e-6)
    # towards the first candidate's direction: the second (like it) overtakes the third
    moved = rocchio(q, cands, 1, 2.0)
    assert moved[1] > moved[2]
    ds = beir.Dataset(name="t", directory=Path("."), docs=[], queries={"q": "x"}, qrels={"q": {"b": 1}})
    rows = [("a", 0.8, "x"), ("b", 0.6, "y"), ("c", 0.9, "z")]
    got = ndcg_by_variant(ds, {"q": rows}, k=3, vectors={"q": (q, cands)})
    assert set(PRF) <= set(got)
