"""The eval metrics against values computed by hand (trec_eval definitions, graded judgments)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from eval.beir import read_qrels
from eval.bm25 import BM25Index
from eval.metrics import (
    evaluate,
    mrr_at_k,
    ndcg_at_k,
    percentile,
    rank_by_score,
    recall_at_k,
)

L2, L3, L5 = math.log2(2), math.log2(3), math.log2(5)


def test_graded_ndcg_uses_the_grade_as_gain_and_log2_rank_plus_one_discount() -> None:
    judged = {"a": 3, "b": 2, "c": 1, "d": 0}
    # c (1) at rank 1, x unjudged at 2, a (3) at 3, b (2) at 4
    got = ndcg_at_k(["c", "x", "a", "b"], judged, 10)
    dcg = 1 / L2 + 0 + 3 / math.log2(4) + 2 / L5  # 1 + 1.5 + 0.8614 = 3.3614
    ideal = 3 / L2 + 2 / L3 + 1 / math.log2(4)  # 3 + 1.2619 + 0.5 = 4.7619
    assert got == pytest.approx(dcg / ideal)
    assert got == pytest.approx(0.70590, abs=1e-5)


def test_perfect_ranking_scores_one_and_a_judged_non_relevant_passage_gains_nothing() -> None:
    judged = {"a": 3, "b": 2, "c": 1, "d": 0}
    assert ndcg_at_k(["a", "b", "c", "d"], judged) == pytest.approx(1.0)
    assert ndcg_at_k(["d", "a", "b", "c"], judged) < 1.0
    assert ndcg_at_k(["d", "x", "y"], judged) == 0.0


def test_ideal_dcg_counts_all_judged_passages_not_only_the_retrieved_ones() -> None:
    # 12 judged-relevant passages, only one retrieved: the ideal is the best 10 of all 12
    judged = {f"r{i:02d}": 1 for i in range(12)}
    judged["top"] = 2
    got = ndcg_at_k(["top"], judged, 10)
    ideal = 2 / L2 + sum(1 / math.log2(i + 1) for i in range(2, 11))
    assert got == pytest.approx(2 / ideal)
    assert got == pytest.approx(0.3608, abs=1e-4)  # 2 / 5.5436


def test_cut_at_k_ignores_what_is_ranked_below_it() -> None:
    judged = {"z": 1}
    ranking = [f"n{i}" for i in range(10)] + ["z"]
    assert ndcg_at_k(ranking, judged, 10) == 0.0
    assert mrr_at_k(ranking, judged, 10) == 0.0
    assert recall_at_k(ranking, judged, 10) == 0.0
    assert recall_at_k(ranking, judged, 50) == 1.0
    assert ndcg_at_k(ranking, judged, 11) == pytest.approx((1 / math.log2(12)) / 1.0)


def test_fewer_results_than_k_score_what_is_there() -> None:
    judged = {"a": 1, "b": 1}
    assert ndcg_at_k(["a"], judged, 10) == pytest.approx(1 / (1 + 1 / L3))  # 0.6131
    assert ndcg_at_k(["a"], judged, 10) == pytest.approx(0.61315, abs=1e-5)
    assert recall_at_k(["a"], judged, 10) == 0.5
    assert mrr_at_k(["a"], judged, 10) == 1.0
    assert ndcg_at_k([], judged, 10) == 0.0
    assert mrr_at_k([], judged, 10) == 0.0


def test_a_repeated_passage_keeps_its_slot_but_earns_nothing() -> None:
    judged = {"a": 2, "b": 1}
    # a, a, b: the repeat at rank 2 gains 0; b at rank 3 gains 1/2
    got = ndcg_at_k(["a", "a", "b"], judged, 10)
    assert got == pytest.approx((2 + 0 + 1 / 2) / (2 + 1 / L3))
    assert got == pytest.approx(0.95024, abs=1e-5)
    assert ndcg_at_k(["a", "a", "a", "a"], judged) <= 1.0
    assert recall_at_k(["a", "a", "b"], judged, 10) == 1.0
    assert recall_at_k(["a", "a", "a"], judged, 10) == 0.5
    assert mrr_at_k(["x", "x", "b"], judged, 10) == pytest.approx(1 / 3)


def test_mrr_needs_grade_one_or_more() -> None:
    judged = {"zero": 0, "one": 1}
    assert mrr_at_k(["zero", "n", "one"], judged, 10) == pytest.approx(1 / 3)


def test_a_query_without_relevant_judgments_has_no_metric() -> None:
    with pytest.raises(ValueError, match="no judged-relevant"):
        ndcg_at_k(["a"], {"a": 0}, 10)
    with pytest.raises(ValueError, match="no judged-relevant"):
        recall_at_k(["a"], {}, 10)


def test_evaluate_excludes_and_counts_unjudged_queries_and_zeroes_unanswered_ones() -> None:
    qrels = {
        "q1": {"a": 1},
        "q2": {"b": 2, "c": 1},
        "q3": {"d": 0},  # judged, but nothing relevant: excluded
        "q5": {"e": 1},  # judged, never answered: scores 0
    }
    run = {"q1": ["a"], "q2": ["c", "b"], "q3": ["d"], "q4": ["a"]}
    s = evaluate(run, qrels, ["q1", "q2", "q3", "q4", "q5"])
    assert s.judged == 3
    assert s.unjudged == 2  # q3 (only grade 0) and q4 (no judgments at all)
    assert s.missing == ["q5"]
    q2 = (1 / L2 + 2 / L3) / (2 / L2 + 1 / L3)  # c then b: 2.2619 / 2.6309 = 0.8597
    assert s.per_query["q2"]["ndcg@10"] == pytest.approx(q2)
    assert s.per_query["q5"] == {"ndcg@10": 0.0, "recall@10": 0.0, "recall@50": 0.0, "mrr@10": 0.0}
    assert s.means["ndcg@10"] == pytest.approx((1 + q2 + 0) / 3)
    assert s.means["mrr@10"] == pytest.approx((1 + 1 + 0) / 3)
    assert s.means["recall@10"] == pytest.approx((1 + 1 + 0) / 3)
    assert set(s.per_query) == {"q1", "q2", "q5"}


def test_evaluate_with_no_judged_query_reports_zero_queries() -> None:
    s = evaluate({"q": ["a"]}, {}, ["q"])
    assert (s.judged, s.unjudged) == (0, 1)
    assert s.means["ndcg@10"] == 0.0


def test_ties_in_score_break_by_passage_id_descending_like_trec_eval() -> None:
    assert rank_by_score({"d1": 1.0, "d2": 2.0, "d3": 1.0, "d10": 1.0}) == ["d2", "d3", "d10", "d1"]
    # so a tie between a relevant and a non-relevant passage has one fixed answer
    judged = {"d1": 1}
    assert ndcg_at_k(rank_by_score({"d1": 1.0, "d9": 1.0}), judged) == pytest.approx(1 / L3)


def test_percentile_interpolates_linearly() -> None:
    assert percentile([4, 1, 3, 2], 50) == 2.5
    assert percentile([1, 2, 3, 4], 95) == pytest.approx(3.85)
    assert percentile([7], 95) == 7
    assert math.isnan(percentile([], 50))


def test_bm25_index_scores_by_hand() -> None:
    # N=3, avgdl=2; "cat": df=2 -> idf=ln(1+1.5/2.5); "dog": df=1 -> idf=ln(1+2.5/1.5)
    idx = BM25Index({"x": "cat dog", "y": "cat cat", "z": "bird fish"}, k1=0.9, b=0.4)
    s = idx.scores("the cat and the dog")  # stopwords dropped
    idf_cat, idf_dog = math.log(1 + 1.5 / 2.5), math.log(1 + 2.5 / 1.5)
    one = 1 * 1.9 / (1 + 0.9)  # tf=1, dl=avgdl: the length norm is k1
    assert s["x"] == pytest.approx(idf_cat * one + idf_dog * one)
    assert s["y"] == pytest.approx(idf_cat * 2 * 1.9 / (2 + 0.9))
    assert "z" not in s
    assert idx.search("cat dog", 10) == ["x", "y"]


def test_read_qrels_skips_a_header_and_keeps_grades(tmp_path: Path) -> None:
    p = tmp_path / "test.tsv"
    p.write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t0\nq2\td1\t1\n")
    assert read_qrels(p) == {"q1": {"d1": 2, "d2": 0}, "q2": {"d1": 1}}
    p.write_text("q1\td1\t2\nq1\td2\tx\n")
    with pytest.raises(ValueError, match="not a number"):
        read_qrels(p)
