"""scripts/qdrant_bootstrap.py and `python -m app` as an operator runs them: subprocesses on the
real model and the embedded Qdrant engine in a temporary directory, tiny corpora."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.paths import ROOT
from support.proc import run_python

from app.clients.embedder import OnnxEmbedder
from app.clients.vectorstore import EdgeStore
from app.ingest import content_hash
from app.settings import QdrantSettings
from app.types import point_id

SCRIPT = ROOT / "scripts" / "qdrant_bootstrap.py"

TOPICS = {
    "astronomy": [
        "The telescope revealed a spiral galaxy far beyond the Milky Way.",
        "Astronomers measured the orbit of a comet around the Sun.",
        "A supernova explosion briefly outshone its entire galaxy.",
        "Saturn's rings are made of ice and rock orbiting the planet.",
    ],
    "cooking": [
        "Knead the bread dough for ten minutes before letting it rise.",
        "Simmer the tomato sauce slowly with garlic and fresh basil.",
        "Whisk eggs and sugar until pale before folding in the flour.",
        "Roast the vegetables in a hot oven until their edges caramelise.",
    ],
    "networking": [
        "TCP retransmits lost segments after a timeout expires.",
        "A router forwards packets using its routing table.",
        "DNS resolves host names to IP addresses for clients.",
        "TLS encrypts the connection between browser and server.",
    ],
}


def rows(n_per_topic: int = 4, suffix: str = "") -> list[dict[str, Any]]:
    out = []
    for topic, texts in TOPICS.items():
        for i, text in enumerate(texts[:n_per_topic]):
            out.append({"id": f"{topic}-{i}", "text": text + suffix, "topic": topic, "lang": "en"})
    return out


def write_jsonl(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def bootstrap(qdrant_path: Path, model_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("RAG_")}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        env={**clean, "RAG_QDRANT__PATH": str(qdrant_path), "RAG_EMBEDDER__MODEL_DIR": str(model_dir), **env},
        capture_output=True,
        text=True,
        timeout=180,
    )


def info_of(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert printed["status"] == "ok"
    return dict(printed["result"])


def assert_schema(info: dict[str, Any], points: int) -> None:
    """The collection schema (cosine vectors, HNSW, the tenant index) in the shape of Qdrant's
    GET /collections/<name>."""
    assert info["points_count"] == points
    assert info["indexed_vectors_count"] == points  # HNSW built over every point
    assert info["config"]["params"]["vectors"] == {"size": 384, "distance": "Cosine"}
    assert info["config"]["hnsw_config"] == {"m": 32, "ef_construct": 200}
    tenant = info["payload_schema"]["tenant"]
    assert tenant["data_type"] == "keyword"
    assert tenant["params"] == {"type": "keyword", "is_tenant": True}


def assert_no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout == ""


async def open_store(qdrant_path: Path, collection: str = "rag_docs") -> EdgeStore:
    return EdgeStore.from_settings(QdrantSettings(path=qdrant_path, collection=collection))


async def test_jsonl_load_rerun_if_empty_recreate_and_second_collection(
    tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    qdrant = tmp_path / "qdrant"
    first = write_jsonl(tmp_path / "first.jsonl", rows())
    # 3 topics x 3 passages, other texts: ids overlap with `first`, and 3 of first's ids are gone
    second = write_jsonl(tmp_path / "second.jsonl", rows(3, suffix=" (revised)"))

    loaded = bootstrap(qdrant, model_dir, "--jsonl", str(first))
    assert_schema(info_of(loaded), 12)
    assert "created" in loaded.stderr
    assert "loaded 12 passages" in loaded.stderr
    assert "12/12" in loaded.stderr  # the progress bar ran to the end
    assert "Traceback" not in loaded.stderr

    # what landed: the gateway's payload (app.ingest.to_payload), and a real query finds its topic first
    store = await open_store(qdrant)
    embedder = OnnxEmbedder(model_dir)
    try:
        query = await embedder.embed("which planet has rings of ice")
        hits = await store.search(query, 4, 64, "default", {})
        assert hits[0].id == point_id("default", "astronomy-3")
        payload = hits[0].payload
        assert payload["doc_id"] == "astronomy-3"
        assert payload["tenant"] == "default"
        assert payload["source"] == "first"
        assert payload["topic"] == "astronomy"
        assert payload["lang"] == "en"
        assert payload["content_hash"] == content_hash(payload["text"])
        hits = await store.search(await embedder.embed("how long to knead bread dough"), 4, 64, "default", {})
        assert hits[0].payload["doc_id"] == "cooking-0"
    finally:
        await store.aclose()
        await embedder.aclose()

    # re-running is idempotent: same ids, same count
    again = bootstrap(qdrant, model_dir, "--jsonl", str(first))
    assert_schema(info_of(again), 12)
    assert "exists" in again.stderr

    # --if-empty leaves a non-empty collection alone
    skipped = bootstrap(qdrant, model_dir, "--jsonl", str(second), "--if-empty")
    assert_schema(info_of(skipped), 12)
    assert "nothing loaded" in skipped.stderr

    # --recreate drops it and loads only the new corpus
    recreated = bootstrap(qdrant, model_dir, "--jsonl", str(second), "--recreate")
    assert_schema(info_of(recreated), 9)
    assert "created" in recreated.stderr
    store = await open_store(qdrant)
    try:
        assert await store.count("default") == 9
        removed = {"doc_id": ["astronomy-3", "cooking-3", "networking-3"]}
        assert await store.search(unit_query(), 20, 64, "default", removed) == []
        [kept] = await store.search(unit_query(), 1, 64, "default", {"doc_id": ["astronomy-0"]})
        assert kept.text.endswith("(revised)")
    finally:
        await store.aclose()

    # destructive flags with bad input: refused before anything is dropped
    no_id = write_jsonl(tmp_path / "no-id.jsonl", [{"id": "a", "text": "x"}, {"text": "y"}])
    refused = [
        (["--recreate", "--jsonl", str(no_id)], "no-id.jsonl:2: each line needs 'id' and 'text'"),
        # the name becomes a directory: validated like RAG_QDRANT__COLLECTION, never `..`
        (["--recreate", "--collection", "..", "--jsonl", str(second)], "collection"),
    ]
    env = {"RAG_QDRANT__PATH": str(qdrant), "RAG_EMBEDDER__MODEL_DIR": str(model_dir)}
    for args, message in refused:
        # main() runs its own event loop: off this test's loop, on a thread
        code, err = await asyncio.to_thread(in_process, monkeypatch, capsys, *args, **env)
        assert code != 0
        assert message in err
    assert first.exists()
    assert sorted(p.name for p in qdrant.iterdir()) == ["rag_docs"]

    # --collection: a second collection next to the first; a repeated id is one point, the
    # later line winning
    dup = write_jsonl(
        tmp_path / "dup.jsonl", [*rows(1), {"id": "cooking-0", "text": "Boil pasta in salted water."}]
    )
    other = bootstrap(qdrant, model_dir, "--jsonl", str(dup), "--collection", "second_docs", "--if-empty")
    assert_schema(info_of(other), 3)
    assert "collection 'second_docs': created" in other.stderr
    assert "loaded 3 passages" in other.stderr
    assert sorted(p.name for p in qdrant.iterdir()) == ["rag_docs", "second_docs"]
    store = await open_store(qdrant)
    second_store = await open_store(qdrant, "second_docs")
    try:
        assert await store.count() == 9
        assert await second_store.count() == 3
        [hit] = await second_store.search(unit_query(), 1, 64, "default", {"doc_id": ["cooking-0"]})
        assert hit.text == "Boil pasta in salted water."
    finally:
        await store.aclose()
        await second_store.aclose()


def unit_query() -> Any:
    v = np.ones(384, dtype=np.float32)
    return v / np.linalg.norm(v)


async def test_beir_directory(tmp_path: Path, model_dir: Path) -> None:
    beir = tmp_path / "scifact-mini"
    beir.mkdir()
    corpus = [
        {"_id": "b1", "title": "Comets", "text": "Astronomers measured the orbit of a comet around the Sun."},
        {"_id": "b2", "title": "", "text": "Knead the bread dough for ten minutes before letting it rise."},
        {
            "_id": 3,
            "title": "Routing",
            "text": "A router forwards packets using its routing table.",
            "metadata": {},
        },
    ]
    write_jsonl(beir / "corpus.jsonl", [*corpus, ""])  # a blank line is skipped
    (beir / "queries.jsonl").write_text('{"_id": "q1", "text": "comet orbit"}\n')
    qdrant = tmp_path / "qdrant"
    proc = bootstrap(qdrant, model_dir, "--beir", str(beir), "--tenant", "lab")
    assert_schema(info_of(proc), 3)
    store = await open_store(qdrant)
    try:
        assert await store.count("lab") == 3
        assert await store.count("default") == 0
        by_id = {}
        for doc_id in ("b1", "b2", "3"):
            [hit] = await store.search(unit_query(), 1, 64, "lab", {"doc_id": [doc_id]})
            by_id[doc_id] = hit
        assert by_id["b1"].id == point_id("lab", "b1")
        assert by_id["b1"].text == "Comets\nAstronomers measured the orbit of a comet around the Sun."
        assert by_id["b2"].text == "Knead the bread dough for ten minutes before letting it rise."
        assert by_id["3"].text.startswith("Routing\n")
        assert {h.payload["source"] for h in by_id.values()} == {"scifact-mini"}
        assert all(h.payload["tenant"] == "lab" for h in by_id.values())
    finally:
        await store.aclose()


def in_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str, **env: str
) -> tuple[int, str]:
    """The script's main() in this process: the code path of the subprocess runs without a new
    interpreter per case. Any exception other than SystemExit fails the test (a traceback)."""
    from scripts import qdrant_bootstrap

    for name in list(os.environ):
        if name.upper().startswith("RAG_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        code: Any = qdrant_bootstrap.main(list(args))
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    if isinstance(code, str):  # the interpreter prints such a message and exits 1
        return 1, err + code
    return int(code or 0), err


def test_bad_inputs_fail_cleanly_and_create_nothing(
    tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    qdrant = tmp_path / "qdrant"
    env = {"RAG_QDRANT__PATH": str(qdrant), "RAG_EMBEDDER__MODEL_DIR": str(model_dir)}
    good = write_jsonl(tmp_path / "good.jsonl", rows(1))
    no_id = write_jsonl(tmp_path / "no-id.jsonl", [{"id": "a", "text": "x"}, {"text": "y"}])
    (tmp_path / "empty-beir").mkdir()
    no_id_beir = tmp_path / "no-id-beir"
    no_id_beir.mkdir()
    write_jsonl(no_id_beir / "corpus.jsonl", [{"_id": "a", "text": "x"}, {"title": "t", "text": "no id"}])

    # as an operator sees it: separate processes, a message, no traceback
    runs: list[tuple[list[str], dict[str, str], int, str]] = [
        (["--beir", str(tmp_path / "empty-beir")], {}, 2, "has no corpus.jsonl"),
        (["--jsonl", str(no_id)], {}, 1, "no-id.jsonl:2: each line needs 'id' and 'text'"),
        (["--jsonl", str(good)], {"RAG_QDRANT__HNSW_M": "2"}, 2, "qdrant.hnsw_m"),
    ]
    with ThreadPoolExecutor(max_workers=3) as pool:
        procs = list(pool.map(lambda run: bootstrap(qdrant, model_dir, *run[0], **run[1]), runs))
    for (args, _, code, message), proc in zip(runs, procs, strict=True):
        assert proc.returncode == code, (args, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)
        assert_no_traceback(proc)

    # the other cases through the same main()
    cases: list[tuple[list[str], dict[str, str], int, str]] = [
        (["--jsonl", str(tmp_path / "missing.jsonl")], {}, 2, "missing.jsonl is not a file"),
        (
            ["--jsonl", str(write_jsonl(tmp_path / "bad-json.jsonl", [{"id": "a", "text": "x"}, "{oops"]))],
            {},
            1,
            "bad-json.jsonl:2: not valid JSON",
        ),
        (
            ["--jsonl", str(write_jsonl(tmp_path / "not-object.jsonl", ["[1, 2]"]))],
            {},
            1,
            "not-object.jsonl:1: each line must be a JSON object",
        ),
        (["--beir", str(no_id_beir)], {}, 1, "corpus.jsonl:2: each line needs '_id'"),
        (["--collection", "a/b", "--jsonl", str(good)], {}, 2, "collection"),
        (["--jsonl", str(good)], {"RAG_EMBEDDER__MODEL_DIR": str(tmp_path / "nope")}, 1, "export_onnx.py"),
    ]
    for args, extra_env, code, message in cases:
        got, err = in_process(monkeypatch, capsys, *args, **{**env, **extra_env})
        assert got == code, (args, err)
        assert message in err, (args, err)

    # no run got as far as creating a collection
    assert not qdrant.exists() or list(qdrant.iterdir()) == []


def run_app(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_python("-m", "app", *args, timeout=60, **env)


def test_app_help() -> None:
    proc = run_app("--help")
    assert proc.returncode == 0
    assert "RAG_" in proc.stdout
    assert "--workers" in proc.stdout
    assert "RAG_QDRANT__URL" in proc.stdout


def test_app_refuses_workers_with_the_embedded_engine() -> None:
    proc = run_app("--workers", "2")
    assert proc.returncode == 2
    assert "embedded Qdrant engine" in proc.stderr
    assert "RAG_QDRANT__URL" in proc.stderr
    assert "--workers 1" in proc.stderr
    assert_no_traceback(proc)


def test_python_m_app_with_invalid_settings_says_so_without_a_traceback() -> None:
    env = {**os.environ, "RAG_SERVER__PORT": "0", "RAG_RERANKER__KIND": "http"}
    out = subprocess.run([sys.executable, "-m", "app"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "invalid settings" in out.stderr
    assert "server.port" in out.stderr
    assert "reranker" in out.stderr
    assert "Traceback" not in out.stderr
