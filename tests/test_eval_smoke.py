"""The eval tool end to end on a tiny BEIR dataset written here: collection built with the
ingest code and cached, queries through POST /rag of the real app, numbers checked by hand."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.app import make_settings
from support.asgi import read_body, serve_asgi
from support.net import free_port

from app.settings import QdrantSettings
from eval.__main__ import main, parse
from eval.run import Options, evaluate_dataset, render

PASSAGES = {
    "d01": ("", "Zebra migration across the Serengeti follows the rains every year."),
    "d02": ("", "A zebra has black and white stripes that confuse biting flies."),
    "d03": ("", "Bird migration covers thousands of kilometres each autumn season."),
    "d04": ("", "Salmon migration upstream ends at the gravel beds where they spawn."),
    "d05": ("Emperor penguins", "Emperor penguins huddle together to survive the Antarctic winter cold."),
    "d06": ("", "Antarctic ice sheets hold most of the fresh water on Earth."),
    "d07": ("", "Sourdough bread rises with a starter of wild yeast and bacteria."),
    "d08": ("", "To bake bread at home, preheat the oven to a high temperature."),
    "d09": ("", "Volcanoes erupt when magma rises through cracks in the crust."),
    "d10": ("", "The stock market fell sharply after the interest rate decision."),
    "d11": ("", "Photosynthesis converts sunlight, water and carbon dioxide into sugar."),
    "d12": ("", "Great herds of wildebeest cross the Mara river each year in search of grass."),
}
QUERIES = {
    "q1": "zebra migration",
    "q2": "penguins antarctic cold",
    "q3": "how to bake sourdough bread",
    "q4": "why do volcanoes erupt",  # no judgments: excluded and counted
}
QRELS = [
    ("q1", "d01", 2),
    ("q1", "d03", 1),
    ("q1", "d12", 3),
    ("q2", "d05", 3),
    ("q3", "d07", 2),
    ("q3", "d08", 1),
]


def write_beir(d: Path, passages: dict[str, tuple[str, str]]) -> Path:
    (d / "qrels").mkdir(parents=True)
    (d / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, (t, x) in passages.items())
    )
    (d / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": i, "text": q}) + "\n" for i, q in QUERIES.items())
    )
    (d / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{p}\t{g}\n" for q, p, g in QRELS)
    )
    return d


# BM25 over the 12 passages (stopwords dropped), worked out by hand:
# q1 "zebra migration": d01 has both terms; d02 "zebra" (df 2) beats d03/d04 "migration" (df 3);
#    d03 and d04 have one "migration" in 8 tokens each: a tie, broken by id descending -> d04, d03.
#    ranking d01 d02 d04 d03: DCG = 2 + 1/log2(5); ideal (d12 3, d01 2, d03 1) = 3 + 2/log2(3) + 1/2
# q2: d05 (three terms) then d06 ("antarctic"): the only judged passage first -> 1
# q3 "bake sourdough bread": d07 {sourdough, bread} and d08 {bake, bread}, same lengths and idfs:
#    a tie -> d08 (grade 1), d07 (grade 2): DCG = 1 + 2/log2(3); ideal = 2 + 1/log2(3)
Q1 = (2 + 1 / math.log2(5)) / (3 + 2 / math.log2(3) + 1 / 2)  # 0.51045
Q3 = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))  # 0.85974


@pytest.fixture
def oracle_reranker() -> Iterator[str]:
    """A TEI-style `POST /rerank` server on loopback that scores each passage with its judged
    grade: through the gateway its ranking must be perfect, nDCG@10 = 1 for every query."""
    by_text = {(f"{t}\n{x}" if t else x): pid for pid, (t, x) in PASSAGES.items()}
    by_query = {q: qid for qid, q in QUERIES.items()}
    grades = {(q, p): g for q, p, g in QRELS}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        req = json.loads(await read_body(receive))
        qid = by_query[req["query"]]
        out = [{"index": i, "score": grades.get((qid, by_text[t]), 0)} for i, t in enumerate(req["texts"])]
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps(out).encode()})

    port = free_port()
    with serve_asgi(app, port, name="oracle-reranker"):
        yield f"http://127.0.0.1:{port}"


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[str, dict[str, Any]]:
    """`python -m eval ARGS` in-process: the printed report and the JSON it wrote."""
    results = Path(args[args.index("--results-dir") + 1])
    before = set(results.glob("*.json")) if results.exists() else set()
    assert main(list(args)) == 0
    (new,) = set(results.glob("*.json")) - before
    assert new.with_suffix(".md").read_text().strip() == capsys.readouterr().out.strip()
    return new.with_suffix(".md").read_text(), json.loads(new.read_text())


def test_eval_end_to_end_on_a_tiny_dataset(
    tmp_path: Path,
    model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    oracle_reranker: str,
) -> None:
    # the tool reads the gateway's RAG_* settings like the gateway does
    monkeypatch.setenv("RAG_EMBEDDER__MODEL_DIR", str(model_dir))
    monkeypatch.setenv("RAG_QDRANT__PATH", str(tmp_path / "not-used"))
    data = write_beir(tmp_path / "tiny", PASSAGES)
    common = ["--cache-dir", str(tmp_path / "cache"), "--results-dir", str(tmp_path / "results")]

    text, report = run_cli(capsys, "--data", str(data), "--http-reranker", oracle_reranker, *common)

    assert report["dataset"]["judged_queries"] == 3
    assert report["dataset"]["unjudged_queries"] == 1
    assert "1 without judgments excluded" in text
    assert report["build"]["cached"] is False
    assert report["build"]["points"] == 12
    assert not (tmp_path / "not-used").exists()  # the gateway's own collection is never touched
    bm25, dense, lexical, old, oracle = report["rows"]
    assert bm25["run"] == {"q1": ["d01", "d02", "d04", "d03"], "q2": ["d05", "d06"], "q3": ["d08", "d07"]}
    assert bm25["per_query"]["q1"]["ndcg@10"] == pytest.approx(Q1)
    assert bm25["metrics"]["ndcg@10"] == pytest.approx((Q1 + 1 + Q3) / 3)
    assert bm25["metrics"]["ndcg@10"] == pytest.approx(0.79006, abs=1e-5)
    assert bm25["metrics"]["recall@10"] == pytest.approx((2 / 3 + 1 + 1) / 3)
    assert bm25["metrics"]["recall@50"] == pytest.approx((2 / 3 + 1 + 1) / 3)
    assert bm25["metrics"]["mrr@10"] == 1.0
    assert "| BM25 full corpus (k1=0.9, b=0.4) | 0.790 | 0.889 | 0.889 | 1.000 |" in text

    # through the gateway: every passage comes back (k=100 > 12), mapped to the corpus ids,
    # and the model puts a judged-relevant passage first for each of these clear-cut queries
    for row in (dense, lexical, old):
        assert (row["errors"], row["degraded"], row["queries"]) == (0, 0, 3)
        assert all(sorted(r) == sorted(PASSAGES) for r in row["run"].values())
        assert row["metrics"]["mrr@10"] == 1.0
        assert row["metrics"]["recall@50"] == 1.0
        assert row["latency_ms"]["p95"] >= row["latency_ms"]["p50"] > 0
    assert dense["run"]["q2"][0] == "d05"
    assert dense["system"] == "vector order"
    assert lexical["system"].startswith("lexical-bm25@v4:rrf60:w=0.2:")
    assert lexical["name"] == "lexical rrf, w=0.2 (default /rag)"
    # the default before reciprocal-rank fusion, side by side
    assert old["system"].startswith("lexical-bm25@v4:minmax:w=0.2:")
    assert f"| {dense['name']} | {dense['metrics']['ndcg@10']:.3f} |" in text

    # the http reranker row really is that reranker's order: the oracle's is perfect
    assert oracle["system"] == f"http:tei:rerank@{oracle_reranker}"
    assert (oracle["errors"], oracle["degraded"]) == (0, 0)
    assert {q: m["ndcg@10"] for q, m in oracle["per_query"].items()} == {"q1": 1.0, "q2": 1.0, "q3": 1.0}
    assert oracle["run"]["q1"][:3] == ["d12", "d01", "d03"]
    assert oracle["metrics"]["recall@10"] == 1.0

    # a second run reuses the built collection and ranks the same
    _, again = run_cli(capsys, "--data", str(data), *common)
    assert again["build"]["cached"] is True
    assert again["build"]["entry"] == report["build"]["entry"]
    assert [r["run"] for r in again["rows"]] == [r["run"] for r in report["rows"][:4]]
    assert not list((tmp_path / "cache").glob(".build-*"))

    # a changed corpus is a new cache entry, not a stale hit
    changed = write_beir(tmp_path / "tiny2", {**PASSAGES, "d13": ("", "Glaciers carve valleys.")})
    _, other = run_cli(capsys, "--data", str(changed), *common)
    assert other["build"]["cached"] is False
    assert other["build"]["points"] == 13
    assert other["build"]["entry"] != report["build"]["entry"]


def test_cli_refuses_a_directory_that_is_not_beir(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        parse(["--data", str(tmp_path)])
    opts = parse(["--data", str(write_beir(tmp_path / "d", PASSAGES)), "-k", "50", "--sweep", "--no-write"])
    assert (opts.k, opts.sweep, opts.results_dir) == (50, True, None)


async def test_sweep_through_the_gateway(tmp_path: Path, model_dir: Path) -> None:
    data = write_beir(tmp_path / "tiny", PASSAGES)
    opts = Options(
        data=data,
        cache_dir=tmp_path / "cache",
        results_dir=None,
        quiet=True,
        sweep=True,
        sweep_weights=(0.0, 0.2, 1.0),
        sweep_k=(5, 12),
        sweep_ef=(4, QdrantSettings().ef_default),
        sweep_ef_k=(5,),
    )
    report = await evaluate_dataset(opts, make_settings(model_dir, tmp_path / "unused", None))
    dense = report.rows[1].summary.means["ndcg@10"]
    grid = report.sweep["fusion_weight_by_k"]
    assert set(grid) == {"0", "0.2", "1"}
    # weight 0 is the vector order whatever k is; nDCG@10 of the vector order over all 12
    # passages (k=12) is the dense row's
    assert grid["0"]["12"] == pytest.approx(dense)
    # each weight is its own gateway, whose reranker has that weight
    assert report.sweep["rerankers"] == {
        "0": "lexical-bm25@v4:rrf60:w=0:k1=0.9:b=0.4",
        "0.2": "lexical-bm25@v4:rrf60:w=0.2:k1=0.9:b=0.4",
        "1": "lexical-bm25@v4:rrf60:w=1:k1=0.9:b=0.4",
    }
    assert all(0 < v <= 1 for row in grid.values() for v in row.values())
    default_ef = QdrantSettings().ef_default
    assert report.sweep["ef"][str(default_ef)]["dense k=5"] == pytest.approx(grid["0"]["5"])
    assert set(report.sweep["ef"]["4"]) == {"dense k=5", "lexical k=100"}
    text = render(report)
    assert "| 0.2 (default) |" in text
    assert f"| {default_ef} (default) |" in text


def test_several_datasets_in_one_run_with_a_summary_and_a_worst_case(
    tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from eval.multi import dataset_dirs

    monkeypatch.setenv("RAG_EMBEDDER__MODEL_DIR", str(model_dir))
    root = tmp_path / "sets"
    a = write_beir(root / "alpha", PASSAGES)
    b = write_beir(root / "beta", {**PASSAGES, "d13": ("", "Glaciers carve valleys.")})
    (root / "notes").mkdir()  # not a dataset: skipped in a directory of datasets
    assert dataset_dirs(str(root)) == [a, b]
    assert dataset_dirs(f"{a},{b}") == [a, b]
    with pytest.raises(ValueError, match="holds none"):
        dataset_dirs(str(root / "notes"))

    common = ["--cache-dir", str(tmp_path / "cache"), "--results-dir", str(tmp_path / "results")]
    assert main(["--data", str(root), *common]) == 0
    out = capsys.readouterr().out
    assert out.count("## alpha: 12 passages") == 1 and out.count("## beta: 13 passages") == 1
    summary = out[out.index("## Summary across datasets") :].splitlines()
    rows = [line for line in summary if line.startswith("| alpha") or line.startswith("| beta")]
    assert len(rows) == 2
    deltas = [float(r.split("|")[9]) for r in rows]
    worst = [line for line in summary if line.startswith("| **worst case**")]
    assert len(worst) == 1 and f"**{min(deltas):+.4f}**" in worst[0]
    written = sorted(p.name.split("-", 1)[1] for p in (tmp_path / "results").glob("*.json"))
    assert written == ["alpha.json", "beta.json"]  # one report per dataset, none overwritten
