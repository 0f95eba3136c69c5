"""Tests for the built-in synthetic corpus (app/corpus.py)."""

from __future__ import annotations

import itertools
import json
import math
import re
from collections import Counter
from pathlib import Path

import pytest

import app.corpus as sc

CORPUS: list[dict[str, str]] = sc.generate(2000, seed=0)

# fmt: off
_STOPWORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "best", "but", "by", "can", "do", "does", "ever", "for",
    "from", "get", "good", "how", "i", "in", "is", "it", "keep", "my", "not", "of", "on", "or", "should",
    "so", "that", "the", "this", "to", "use", "vs", "what", "when", "which", "why", "with", "you", "your",
})
# fmt: on


def _tokens(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOPWORDS and len(w) > 1}


def test_exact_count() -> None:
    assert len(CORPUS) == 2000
    for n in (0, 1, 7, 137):
        assert len(sc.generate(n)) == n


def test_deterministic() -> None:
    assert sc.generate(300, seed=7) == sc.generate(300, seed=7)
    assert sc.generate(2000, seed=0) == CORPUS
    assert sc.generate(300, seed=7) != sc.generate(300, seed=8)


def test_ids_unique_and_stable() -> None:
    ids = [p["id"] for p in CORPUS]
    assert len(set(ids)) == len(ids)
    assert ids[:3] == ["syn-00000", "syn-00001", "syn-00002"]
    assert ids == [p["id"] for p in sc.generate(2000, seed=0)]


def test_schema() -> None:
    for p in CORPUS:
        assert set(p) == {"id", "title", "text", "topic", "source", "lang"}
        assert all(isinstance(v, str) and v for v in p.values())
        assert p["lang"] == "en"
        assert p["topic"] in sc.TOPICS
        assert "{" not in p["text"]
        assert "}" not in p["text"]


def test_sources_are_a_few_per_topic() -> None:
    per_topic: dict[str, set[str]] = {}
    for p in CORPUS:
        per_topic.setdefault(p["topic"], set()).add(p["source"])
    for sources in per_topic.values():
        assert 1 <= len(sources) <= 5


def test_topics_present_and_balanced() -> None:
    assert 18 <= len(sc.TOPICS) <= 25
    assert len(set(sc.TOPICS)) == len(sc.TOPICS)
    counts = Counter(p["topic"] for p in CORPUS)
    assert set(counts) == set(sc.TOPICS)
    expected = len(CORPUS) / len(sc.TOPICS)
    assert all(abs(c - expected) <= 0.1 * expected for c in counts.values()), counts


def test_word_counts_in_range() -> None:
    for p in CORPUS + sc.generate(500, seed=123):
        assert 40 <= len(p["text"].split()) <= 120, p


def test_texts_are_varied() -> None:
    texts = [p["text"] for p in CORPUS]
    assert len(set(texts)) == len(texts)
    # Within a topic, passages should not be near-identical: mean Jaccard well below 1.
    by_topic: dict[str, list[set[str]]] = {}
    for p in CORPUS:
        by_topic.setdefault(p["topic"], []).append(_tokens(p["text"]))
    for topic, bags in by_topic.items():
        sims = [len(a & b) / len(a | b) for a, b in itertools.pairwise(bags)]
        assert sum(sims) / len(sims) < 0.6, topic
        assert max(sims) < 0.95, topic


def test_sample_queries() -> None:
    assert set(sc.SAMPLE_QUERIES) == set(sc.TOPICS)
    for queries in sc.SAMPLE_QUERIES.values():
        assert len(queries) >= 3
        assert all(isinstance(q, str) and len(q.split()) >= 3 for q in queries)


def test_topic_texts_match_their_own_queries() -> None:
    """Texts of a topic must share more vocabulary with its own queries than with any other topic's."""
    query_vocab = {t: set().union(*(_tokens(q) for q in qs)) for t, qs in sc.SAMPLE_QUERIES.items()}
    sums: dict[str, dict[str, float]] = {t: dict.fromkeys(sc.TOPICS, 0.0) for t in sc.TOPICS}
    counts = Counter(p["topic"] for p in CORPUS)
    for p in CORPUS:
        words = _tokens(p["text"] + " " + p["title"])
        for t, vocab in query_vocab.items():
            sums[p["topic"]][t] += len(words & vocab) / len(vocab)
    for topic in sc.TOPICS:
        means = {t: s / counts[topic] for t, s in sums[topic].items()}
        own = means.pop(topic)
        rival, rival_score = max(means.items(), key=lambda kv: kv[1])
        assert own > 2 * rival_score, (topic, own, rival, rival_score)


def test_sample_queries_retrieve_their_topic() -> None:
    """A plain TF-IDF retriever over the corpus should return mostly on-topic passages for each query."""
    docs = [_tokens(p["title"] + " " + p["text"]) for p in CORPUS]
    df = Counter(w for d in docs for w in d)
    idf = {w: math.log(len(docs) / c) for w, c in df.items()}
    hits = total = 0
    for topic, queries in sc.SAMPLE_QUERIES.items():
        for q in queries:
            qt = _tokens(q)
            scored = sorted(range(len(docs)), key=lambda i: -sum(idf.get(w, 0.0) for w in qt & docs[i]))
            top = [CORPUS[i]["topic"] for i in scored[:10]]
            hits += sum(t == topic for t in top)
            total += len(top)
            assert top.count(topic) >= 7, (q, Counter(top))
    assert hits / total >= 0.95


def test_main_writes_jsonl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "corpus.jsonl"
    assert sc.main(["--n", "25", "--seed", "3", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert rows == sc.generate(25, seed=3)
    assert sc.main(["--n", "4"]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed == sc.generate(4)
