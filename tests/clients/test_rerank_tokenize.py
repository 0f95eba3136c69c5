"""The lexical tokenizer beyond English: every script, normalised, and properties over random text.

The basic cases (stopwords, plural folding, the scripts) are in test_reranker_lexical.py."""

from __future__ import annotations

import unicodedata

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.clients.rerank import bm25_scores
from app.clients.rerank.tokenize import _unicode_words, tokenize


def test_accents_and_german_in_any_form() -> None:
    assert tokenize("café") == tokenize("CAFÉ") == tokenize("cafe\u0301") == ["café"]
    assert tokenize("Müller") == tokenize("MÜLLER") == tokenize("Mu\u0308ller") == ["müller"]
    assert tokenize("café") != tokenize("cafe")  # accents are kept: different words


def test_russian_words_match_whatever_their_case() -> None:
    assert tokenize("МОСКВА — столица России") == ["москва", "столица", "россии"]
    scores = bm25_scores("Столица", ["Москва — столица России.", "Байкал — глубокое озеро."], 0.9, 0.4)
    assert scores[0] > 0 == scores[1]


def test_arabic_with_and_without_diacritics_and_tatweel_is_one_word() -> None:
    plain, vowelled, stretched = "مكتبة", "مَكْتَبَةٌ", "مكـــتبة"
    assert tokenize(plain) == tokenize(vowelled) == tokenize(stretched) == ["مكتبه"]
    # a passage written without harakat is found by a query written with them
    assert bm25_scores("الْمَكْتَبَةُ", ["زرت المكتبة", "زرت السوق"], 0.9, 0.4)[0] > 0


def test_chinese_and_japanese_become_character_bigrams() -> None:
    assert tokenize("北京大学") == ["北京", "京大", "大学"]
    # kana and kanji are both written without spaces
    assert tokenize("東京タワー") == ["東京", "京タ", "タワ", "ワー"]
    assert tokenize("すし") == ["すし"]
    # a query's bigram meets the same bigram inside a longer passage
    assert bm25_scores("大学", ["北京大学的图书馆", "上海的天气"], 0.9, 0.4)[0] > 0


def test_mixed_scripts_in_one_text_and_one_word() -> None:
    assert tokenize("The iPhones of Tokyo: 東京のiPhones, москва!") == [
        "iphone",
        "tokyo",
        "東京",
        "京の",
        "iphone",  # the ASCII part of a mixed word is an English word like any other
        "москва",
    ]
    assert tokenize("COVID-19 в Москве") == ["covid", "19", "в", "москве"]


def test_tokens_are_nfkc_even_when_casefolding_undoes_it() -> None:
    # "ǰ" has no capital form: casefolding decomposes it into "j" + combining caron
    assert tokenize("ǰ") == ["ǰ"]
    assert tokenize("ǰ") == tokenize("J\u030c")
    # a combining mark with no letter before it to combine with is not a word
    assert tokenize("\u0301abc") == ["abc"]
    assert tokenize("\u064e\u0640") == []


texts = st.one_of(
    st.text(),
    # the scripts and marks the tokenizer treats specially, densely mixed
    st.text(
        st.sampled_from(list("aSs İıǰé\u0301\u0308 كَتبُ\u0651\u0670\u0654ـأإآىة ЖжЁё 東京すしタ ._-1")),
        max_size=40,
    ),
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(texts)
def test_tokenize_properties_on_any_text(text: str) -> None:
    tokens = tokenize(text)  # never raises
    assert all(tokens)  # no empty token
    assert all(unicodedata.normalize("NFKC", t) == t for t in tokens)
    # idempotent under NFKC: a text and its NFKC form are the same terms
    assert tokenize(unicodedata.normalize("NFKC", text)) == tokens


@settings(max_examples=300)
@given(st.text(st.characters(max_codepoint=127)))
def test_the_ascii_fast_path_gives_the_unicode_paths_terms(text: str) -> None:
    assert tokenize(text) == _unicode_words(text)
