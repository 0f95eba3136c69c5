"""LexicalReranker: BM25 over the candidate passages, fused with the vector score.

Every test passes weight, k1 and b explicitly: the defaults are tuned elsewhere."""

from __future__ import annotations

import math

import pytest

from app.clients.rerank import LexicalReranker, bm25_scores
from app.clients.rerank.tokenize import tokenize
from app.types import Candidate


def cands(*rows: tuple[float, str]) -> list[Candidate]:
    return [Candidate(f"p{i}", score, {"text": text}) for i, (score, text) in enumerate(rows)]


def order(scores: list[float]) -> list[int]:
    """Indices by descending score, ties by position (a stable sort, as the pipeline's)."""
    return sorted(range(len(scores)), key=lambda i: -scores[i])


# --- tokenizer and BM25 ------------------------------------------------------------------


def test_tokenize_lowercases_splits_and_drops_stopwords() -> None:
    assert tokenize("The Cat, and THE dog's bowl!") == ["cat", "dog", "s", "bowl"]
    assert tokenize("What is it?") == []
    assert tokenize("COVID-19 in 2020") == ["covid", "19", "2020"]


def test_tokenize_folds_plurals_so_singular_and_plural_match() -> None:
    # Harman's S stemmer: -ies -> -y, -es -> -e, -s -> nothing; -us, -ss and short words stay
    assert tokenize("causes flies cats shoes trees") == ["cause", "fly", "cat", "shoe", "tree"]
    assert tokenize("status glass bus gas") == ["status", "glass", "bus", "gas"]
    assert bm25_scores("symptoms of hypertrophies", ["a symptom of hypertrophy"], 0.9, 0.4)[0] > 0


def test_tokenize_keeps_words_of_every_script() -> None:
    # accents, ligatures and full-width forms: NFKC, then casefold
    assert tokenize("Café Müller, Straße") == ["café", "müller", "strasse"]
    assert tokenize("ﬁnancial ＡＢＣ１２３") == ["financial", "abc123"]
    assert tokenize("nai\u0308ve") == tokenize("naïve") == ["naïve"]  # decomposed = composed
    # Cyrillic: whole words, no English plural folding, no English stopwords
    assert tokenize("Кошки и собаки, как всегда!") == ["кошки", "и", "собаки", "как", "всегда"]
    # Arabic normalised as Lucene does: harakat and tatweel gone, alef/yeh/teh marbuta folded
    assert tokenize("كَتَبَ الطالبُ في المدرسة إلى أحمد") == ["كتب", "الطالب", "في", "المدرسه", "الي", "احمد"]
    assert tokenize("كتب") == tokenize("كَتَبَ")
    # Devanagari vowel signs are combining marks: they stay inside the word
    assert tokenize("नमस्ते दुनिया") == ["नमस्ते", "दुनिया"]
    # no spaces to split on: overlapping character bigrams
    assert tokenize("東京大学") == ["東京", "京大", "大学"]
    assert tokenize("猫") == ["猫"]
    assert tokenize("iPhone東京") == ["iphone", "東京"]


def test_tokenize_folds_plurals_and_drops_stopwords_on_english_words_only() -> None:
    # a text with one non-ASCII character takes the Unicode path: its English words are
    # treated exactly as on the ASCII path
    assert tokenize("The causes of rivers — café") == ["cause", "river", "café"]
    assert tokenize("The causes of rivers") == ["cause", "river"]
    assert tokenize("собаки dogs") == ["собаки", "dog"]


def test_lexical_evidence_works_beyond_english() -> None:
    passages = ["Москва — столица России.", "Париж — столица Франции.", "قطة سوداء"]
    scores = bm25_scores("столица Франции", passages, 0.9, 0.4)
    assert scores[1] > scores[0] > scores[2] == 0
    assert bm25_scores("قِطَّة", passages, 0.9, 0.4)[2] > 0


def test_bm25_matches_a_hand_computed_example() -> None:
    texts = [
        "cats chase mice",  # cats chase mice: 3 tokens
        "dogs chase cats and cats",  # dogs chase cats cats: 4 tokens ("and" is a stopword)
        "birds sing",  # 2 tokens
    ]
    # avgdl = 9 / 3 = 3; k1 = 1.2, b = 0.75
    # "cats": df = 2, idf = ln(1 + (3 - 2 + 0.5) / (2 + 0.5)) = ln(1.6); "garden": in no text
    # doc 0: tf 1, norm = 1.2 * (0.25 + 0.75 * 3/3) = 1.2 -> ln(1.6) * 1 * 2.2 / (1 + 1.2)
    # doc 1: tf 2, norm = 1.2 * (0.25 + 0.75 * 4/3) = 1.5 -> ln(1.6) * 2 * 2.2 / (2 + 1.5)
    got = bm25_scores("cats in the garden", texts, k1=1.2, b=0.75)
    assert got == pytest.approx([math.log(1.6) * 2.2 / 2.2, math.log(1.6) * 4.4 / 3.5, 0.0], rel=1e-12)

    # two query terms add up; "chase": df = 2 as well, tf 1 in docs 0 and 1
    got = bm25_scores("Cats CHASE", texts, k1=1.2, b=0.75)
    idf = math.log(1.6)
    assert got == pytest.approx(
        [idf * 2.2 / 2.2 + idf * 2.2 / 2.2, idf * 4.4 / 3.5 + idf * 2.2 / 2.5, 0.0], rel=1e-12
    )

    # a term in one text only: idf = ln(1 + 2.5 / 1.5); doc 2 has 2 tokens, norm = 1.2 * 0.75
    got = bm25_scores("sing", texts, k1=1.2, b=0.75)
    assert got == pytest.approx([0.0, 0.0, math.log(1 + 2.5 / 1.5) * 2.2 / (1 + 0.9)], rel=1e-12)


def test_bm25_length_normalisation_follows_b() -> None:
    texts = ["solar power", "solar power grid storage battery inverter panel"]
    # b = 0: no length normalisation, equal tf gives equal scores
    flat = bm25_scores("solar", texts, k1=1.2, b=0.0)
    assert flat[0] == pytest.approx(flat[1])
    # b = 1: the shorter text wins
    full = bm25_scores("solar", texts, k1=1.2, b=1.0)
    assert full[0] > full[1] > 0


def test_bm25_degenerate_inputs() -> None:
    assert bm25_scores("anything", [], k1=0.9, b=0.4) == []
    assert bm25_scores("the of and", ["the cat", "of mice"], k1=0.9, b=0.4) == [0.0, 0.0]
    assert bm25_scores("cat", ["", ""], k1=0.9, b=0.4) == [0.0, 0.0]
    # a repeated query term counts once
    texts = ["cat nap", "dog walk"]
    assert bm25_scores("cat cat cat", texts, 0.9, 0.4) == bm25_scores("cat", texts, 0.9, 0.4)


# --- fusion ------------------------------------------------------------------------------

# vector order: 2, 0, 3, 1; BM25 order for "quantum qubits": 1, 3, 0, 2
FUSION = cands(
    (0.80, "a passage about solar energy and quantum effects"),
    (0.20, "quantum computers use qubits; qubits hold quantum state"),
    (0.95, "the history of the printing press"),
    (0.50, "qubits are the units of quantum computers"),
)


def test_rrf_is_the_weighted_sum_of_reciprocal_ranks() -> None:
    # vector ranks 2, 4, 1, 3; BM25 ranks 3, 1, -, 2 (passage 2 has no query term, see FUSION)
    w = 0.2
    r = LexicalReranker(weight=w, k1=0.9, b=0.4, fusion="rrf", rrf_k=60)
    scores = r.score_sync("quantum qubits", FUSION)
    expected = [1 / 62 + w / 63, 1 / 64 + w / 61, 1 / 61, 1 / 63 + w / 62]
    assert scores == pytest.approx(expected, rel=1e-12)
    assert order(scores) == [0, 3, 1, 2]
    # an equal weight: BM25's best passage comes first
    assert order(LexicalReranker(1.0, 0.9, 0.4, fusion="rrf").score_sync("quantum qubits", FUSION))[0] == 1


def test_rrf_weight_zero_and_a_stopword_only_query_keep_the_vector_order() -> None:
    r = LexicalReranker(0.0, 0.9, 0.4, fusion="rrf")
    assert order(r.score_sync("quantum qubits", FUSION)) == [2, 0, 3, 1]
    for w in (0.2, 0.5, 1.0):
        # every BM25 score is 0: no passage is in the BM25 ranking
        scores = LexicalReranker(w, 0.9, 0.4, fusion="rrf").score_sync("what is the", FUSION)
        assert order(scores) == [2, 0, 3, 1]
        assert scores == pytest.approx([1 / 62, 1 / 64, 1 / 61, 1 / 63])


def test_rrf_ties_share_a_rank_and_passages_without_a_query_term_get_nothing() -> None:
    same = cands((0.5, "alpha beta"), (0.5, "alpha beta"), (0.5, "alpha beta"))
    scores = LexicalReranker(0.2, 0.9, 0.4, fusion="rrf", rrf_k=60).score_sync("alpha", same)
    assert scores == [1 / 61 + 0.2 / 61] * 3  # the same rank in both rankings: a tie
    c = cands((0.9, "gardening"), (0.8, "cooking"), (0.7, "rust lifetimes"), (0.6, "sailing"))
    scores = LexicalReranker(0.2, 0.9, 0.4, fusion="rrf", rrf_k=60).score_sync("rust", c)
    assert scores == pytest.approx([1 / 61, 1 / 62, 1 / 63 + 0.2 / 61, 1 / 64])


def test_rrf_moves_a_passage_a_bounded_number_of_places_whatever_the_scores() -> None:
    """With w = 0.2 and c = 60 the BM25 winner enters the top 10 from dense rank 30 at most, and
    how far it rises does not depend on the score scales or on how many candidates there are."""
    for n in (20, 50, 200):
        for spread in (1e-6, 1.0):
            for start in range(n):
                c = [
                    Candidate(
                        f"p{i}", 1.0 - spread * i / n, {"text": "rare term" if i == start else "common"}
                    )
                    for i in range(n)
                ]
                scores = LexicalReranker(0.2, 0.9, 0.4, fusion="rrf", rrf_k=60).score_sync("rare", c)
                rank = order(scores).index(start) + 1
                assert rank <= start + 1
                assert (rank <= 10) == (start + 1 <= 30)


def test_minmax_weight_zero_is_vector_order() -> None:
    scores = LexicalReranker(weight=0.0, k1=0.9, b=0.4, fusion="minmax").score_sync("quantum qubits", FUSION)
    assert order(scores) == [2, 0, 3, 1]
    # exactly the min-max normalised vector scores
    assert scores == pytest.approx([(0.80 - 0.2) / 0.75, 0.0, 1.0, (0.50 - 0.2) / 0.75])


def test_minmax_weight_one_is_bm25_order() -> None:
    bm25 = bm25_scores("quantum qubits", [c.text for c in FUSION], k1=0.9, b=0.4)
    assert order(bm25) == [1, 3, 0, 2]
    scores = LexicalReranker(weight=1.0, k1=0.9, b=0.4, fusion="minmax").score_sync("quantum qubits", FUSION)
    assert order(scores) == [1, 3, 0, 2]
    lo, hi = min(bm25), max(bm25)
    assert scores == pytest.approx([(x - lo) / (hi - lo) for x in bm25])


def test_minmax_fusion_is_the_weighted_sum_of_normalised_scores() -> None:
    w = 0.3
    bm25 = bm25_scores("quantum qubits", [c.text for c in FUSION], k1=0.9, b=0.4)
    lo, hi = min(bm25), max(bm25)
    dense = [(c.score - 0.2) / 0.75 for c in FUSION]
    expected = [(1 - w) * d + w * (x - lo) / (hi - lo) for d, x in zip(dense, bm25, strict=True)]
    scores = LexicalReranker(weight=w, k1=0.9, b=0.4, fusion="minmax").score_sync("quantum qubits", FUSION)
    assert scores == pytest.approx(expected, rel=1e-12)
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_minmax_stopword_only_query_leaves_vector_order() -> None:
    # nothing lexical to go on: BM25 is flat, the vector order stands for any weight
    for w in (0.2, 0.5, 0.9):
        scores = LexicalReranker(weight=w, k1=0.9, b=0.4, fusion="minmax").score_sync("what is the", FUSION)
        assert order(scores) == [2, 0, 3, 1]
        assert max(scores) == pytest.approx(1 - w)


def test_minmax_identical_scores_are_ties_not_errors() -> None:
    same = cands((0.5, "alpha beta"), (0.5, "alpha beta"), (0.5, "alpha beta"))
    for w in (0.0, 0.5, 1.0):
        scores = LexicalReranker(weight=w, k1=0.9, b=0.4, fusion="minmax").score_sync("alpha", same)
        assert scores == [0.0, 0.0, 0.0]
    one = cands((0.7, "alpha"))
    assert LexicalReranker(weight=0.5, k1=0.9, b=0.4, fusion="minmax").score_sync("alpha", one) == [0.0]


def test_minmax_lexical_evidence_can_overturn_vector_order() -> None:
    c = cands((0.61, "a note on gardening tools"), (0.60, "rust borrow checker lifetimes explained"))
    low = LexicalReranker(weight=0.1, k1=0.9, b=0.4, fusion="minmax").score_sync("rust lifetimes", c)
    high = LexicalReranker(weight=0.9, k1=0.9, b=0.4, fusion="minmax").score_sync("rust lifetimes", c)
    assert order(low) == [0, 1]
    assert order(high) == [1, 0]


async def test_score_runs_off_loop_and_checks_the_result() -> None:
    r = LexicalReranker(weight=0.4, k1=0.9, b=0.4, concurrency=2)
    try:
        assert await r.score("quantum", []) == []
        scores = await r.score("quantum qubits", FUSION)
        assert len(scores) == len(FUSION)
        assert all(math.isfinite(s) for s in scores)
        assert scores == r.score_sync("quantum qubits", FUSION)
        await r.ping()
    finally:
        await r.aclose()


def test_id_names_every_parameter() -> None:
    """The id is part of the rerank cache key: other parameters, other scores, other id."""
    base = LexicalReranker(weight=0.2, k1=0.9, b=0.4)
    assert base.id == LexicalReranker(weight=0.2, k1=0.9, b=0.4).id
    others = {
        LexicalReranker(weight=0.2, k1=0.9, b=0.4, fusion="minmax").id,
        LexicalReranker(weight=0.2, k1=0.9, b=0.4, rrf_k=30).id,
        LexicalReranker(weight=0.3, k1=0.9, b=0.4).id,
        LexicalReranker(weight=0.2, k1=1.2, b=0.4).id,
        LexicalReranker(weight=0.2, k1=0.9, b=0.75).id,
    }
    assert base.id not in others
    assert len(others) == 5
    # the tokenizer's version is in the id: scores cached under an older tokenizer (v2: ASCII
    # only; v3: tokens not always NFKC) are never reused
    assert base.id.startswith("lexical-bm25@v4:")


def test_cached_token_statistics_score_like_fresh_ones_and_follow_the_content_hash() -> None:
    r = LexicalReranker(weight=0.5, k1=0.9, b=0.4, stats_cache_size=4)
    rows = [(0.9, "espresso grind size"), (0.8, "grind the beans finer"), (0.7, "milk foam for latte")]
    cs = [Candidate(f"p{i}", s, {"text": t, "content_hash": f"h{i}"}) for i, (s, t) in enumerate(rows)]
    fresh = LexicalReranker(weight=0.5, k1=0.9, b=0.4).score_sync("finer grind", cs)
    assert r.score_sync("finer grind", cs) == fresh
    assert r.score_sync("finer grind", cs) == fresh  # second time from the cache
    # same point id, new text and hash (a re-index): the new text is what gets scored
    changed = [cs[0], Candidate("p1", 0.8, {"text": "latte art with milk", "content_hash": "h1b"}), cs[2]]
    expected = LexicalReranker(weight=0.5, k1=0.9, b=0.4).score_sync("finer grind", changed)
    assert r.score_sync("finer grind", changed) == expected
    assert expected != fresh
    # the cache is bounded: more passages than its size still score correctly
    many = [
        Candidate(f"q{i}", 1.0 - i / 10, {"text": f"grind {i} finer", "content_hash": f"x{i}"})
        for i in range(9)
    ]
    assert r.score_sync("finer", many) == LexicalReranker(0.5, 0.9, 0.4).score_sync("finer", many)
    assert len(r._stats) <= 4


def test_the_bench_peer_and_the_eval_count_the_rerankers_own_terms() -> None:
    """The naive bench peer and the eval's BM25 baseline once carried a copy of the tokenizer
    that drifted: they must use the reranker's own, and the naive peer the gateway's passage
    schema."""
    pytest.importorskip("torch")
    import bench.peers.naive as naive
    import eval.bm25
    from app.schemas import Passage

    assert naive.tokenize is tokenize
    assert eval.bm25.tokenize is tokenize
    assert naive.Passage is Passage
