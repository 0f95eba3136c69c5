"""Chunking: properties over many random documents with the model's real tokenizer (every chunk
fits the model's window, is an exact slice of the document, consecutive chunks overlap, the chunks
cover the whole document), and ingestion of chunked documents into the embedded engine (chunk
payload and ids, a shorter new version drops its stale chunks, every chunk found by its text)."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.chunking import Chunker
from app.clients.embedder import OnnxEmbedder
from app.clients.vectorstore import EdgeStore
from app.ingest import Document, document_point_ids, ingest
from app.settings import ChunkingSettings, EmbedderSettings, QdrantSettings
from app.types import point_id

MODEL = Path("data/models/all-MiniLM-L6-v2")
WORDS = st.sampled_from(
    ["cycling", "Alps", "weather", "Müller", "café", "электричество", "漢字", "supercalifragilistic", "a"]
)
SEPARATORS = st.sampled_from([" ", " ", " ", ". ", "! ", "\n", ", ", ""])
TEXTS = st.lists(st.tuples(WORDS, SEPARATORS), min_size=0, max_size=600).map(
    lambda parts: "".join(w + s for w, s in parts)
)


@pytest.fixture(scope="module")
def chunker(model_dir: Path) -> Chunker:
    return Chunker.for_model(model_dir, max_tokens=48, overlap=8)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXTS)
def test_chunks_fit_the_window_are_exact_slices_and_cover_the_document(chunker: Chunker, text: str) -> None:
    chunks = chunker.split(text)
    assert chunks, "a document always has at least one chunk"
    assert [c.index for c in chunks] == list(range(len(chunks)))
    if len(chunks) == 1:
        assert chunks[0].text == text  # a short document is stored exactly as given
        return
    for c in chunks:
        assert c.text == text[c.start : c.end]
        assert chunker.count_tokens(c.text) <= chunker.max_tokens  # the model never cuts it short
    # in order, overlapping or touching: nothing between two chunks is left out
    for a, b in itertools.pairwise(chunks):
        assert a.start < b.start <= a.end
    assert text[: chunks[0].start].strip() == ""
    assert text[chunks[-1].end :].strip() == ""


def test_windows_end_at_sentence_ends_and_overlap(chunker: Chunker) -> None:
    text = " ".join(f"Sentence {i} is about cycling in the Alps and the weather there." for i in range(30))
    chunks = chunker.split(text)
    assert len(chunks) > 3
    for c in chunks[:-1]:
        assert c.text.endswith("."), c.text[-30:]
    for a, b in itertools.pairwise(chunks):
        assert b.start < a.end  # they share text
        assert text[b.start - 1] == " "  # and the next starts at a word


def test_settings_refuse_a_window_the_model_would_cut(model_dir: Path) -> None:
    emb = EmbedderSettings(model_dir=model_dir)
    assert Chunker.from_settings(emb, ChunkingSettings()).max_tokens == 256  # the model's own
    with pytest.raises(ValueError, match="max_length"):
        Chunker.from_settings(emb, ChunkingSettings(max_tokens=512))
    with pytest.raises(ValueError, match="overlap"):
        Chunker.from_settings(emb, ChunkingSettings(max_tokens=64, overlap=40))
    # a remote embedder: no tokenizer here, a conservative estimate of the same window
    remote = Chunker.from_settings(
        EmbedderSettings(kind="http", url="http://x", model_dir=Path("absent")), ChunkingSettings()
    )
    assert remote.max_tokens == 256
    words = " ".join(["tokenization", "of", "Müller's", "café", "электричество"] * 400)
    local = Chunker.from_settings(emb, ChunkingSettings())
    pieces = remote.split(words)
    assert len(pieces) > 5
    for c in pieces:
        assert remote.count_tokens(c.text) <= 256
        assert local.count_tokens(c.text) <= 256  # the estimate is conservative for real tokens
    # a remote embedder whose model directory has the tokenizer counts real tokens
    same = Chunker.from_settings(
        EmbedderSettings(kind="http", url="http://x", model_dir=model_dir), ChunkingSettings()
    )
    assert [c.text for c in same.split(words)] == [c.text for c in local.split(words)]


async def test_chunked_documents_in_the_engine(model_dir: Path, tmp_path: Path) -> None:
    store = EdgeStore.from_settings(QdrantSettings(path=tmp_path / "q"))
    embedder = OnnxEmbedder(model_dir)
    chunker = Chunker.for_model(model_dir, max_tokens=64, overlap=8)
    long = " ".join(f"Paragraph {i} explains how tour riders pace the climb number {i}." for i in range(40))
    try:
        n = await ingest(
            store,
            embedder,
            [Document("long", long, "t1"), Document("short", "one short passage", "t1")],
            chunker=chunker,
        )
        chunks = chunker.split(long)
        assert n == len(chunks) + 1 and len(chunks) > 5
        ids = await document_point_ids(store, "t1", "long")
        assert ids == [point_id("t1", "long", i) for i in range(len(chunks))]
        assert ids[0] == point_id("t1", "long")  # chunk 0 keeps a whole document's id
        assert await store.existing(ids) == set(ids)

        # every chunk is found first by its own text, with its place in the document
        vectors = await embedder.embed_batch([c.text for c in chunks])
        for c, v in zip(chunks, vectors, strict=True):
            hit = (await store.search(v, 1, 128, "t1", {}))[0]
            assert hit.payload["doc_id"] == "long"
            assert (hit.payload["chunk"], hit.payload["chunks"]) == (c.index, len(chunks))
            assert hit.payload["text"] == c.text

        # a shorter new version: the chunks it no longer has are gone
        await ingest(store, embedder, [Document("long", " ".join(long.split()[:60]), "t1")], chunker=chunker)
        now = len(chunker.split(" ".join(long.split()[:60])))
        assert 1 < now < len(chunks)
        assert await store.count("t1", {"doc_id": ["long"]}) == now
        assert await store.existing(ids) == set(ids[:now])
        assert await store.count("t1") == now + 1
    finally:
        await store.aclose()
        await asyncio.sleep(0)
