"""The evaluation: every judged query through POST /rag for each configuration, plus the BM25
baseline, scored with eval.metrics; an optional sweep of the knobs (fusion weight, k, ef)."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from app.settings import (
    Settings,
)
from eval import beir
from eval.bm25 import BM25Index
from eval.collection import COLLECTION, Built, build_or_load, default_sessions, private_copy
from eval.gateway import running_gateway
from eval.metrics import METRICS, Qrels, Summary, evaluate, has_relevant, percentile

SWEEP_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
SWEEP_K = (20, 50, 100, 200)
SWEEP_EF = (8, 16, 32, 64, 128, 256)
SWEEP_EF_K = (10, 100)


@dataclass(slots=True)
class Options:
    data: Path
    split: str = "test"
    k: int = 100
    ef: int | None = None  # None: the gateway's own ef policy (qdrant.ef_default)
    bm25_k1: float = 0.9
    bm25_b: float = 0.4
    cross_encoder: Path | None = None
    http_reranker: str | None = None
    http_api: str = "tei"
    http_model: str = "rerank"
    sweep: bool = False
    sweep_weights: tuple[float, ...] = SWEEP_WEIGHTS
    sweep_k: tuple[int, ...] = SWEEP_K
    sweep_ef: tuple[int, ...] = SWEEP_EF
    sweep_ef_k: tuple[int, ...] = SWEEP_EF_K
    cache_dir: Path = Path("data/eval-cache")
    rebuild: bool = False
    batch_size: int = 16
    embed_sessions: int = field(default_factory=default_sessions)
    results_dir: Path | None = Path(__file__).resolve().parent / "results"
    quiet: bool = False


@dataclass(slots=True)
class Row:
    name: str
    system: str  # the reranker id (or what ranked the passages)
    summary: Summary
    latency_ms: list[float]
    runs: dict[str, list[str]]
    degraded: int = 0
    errors: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "system": self.system,
            "metrics": self.summary.means,
            "latency_ms": {
                "p50": percentile(self.latency_ms, 50),
                "p95": percentile(self.latency_ms, 95),
            },
            "queries": self.summary.judged,
            "degraded": self.degraded,
            "errors": self.errors,
            "per_query": self.summary.per_query,
            "run": self.runs,
        }


@dataclass(slots=True)
class Report:
    dataset: dict[str, Any]
    build: dict[str, Any]
    options: dict[str, Any]
    rows: list[Row]
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    sweep: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "build": self.build,
            "options": self.options,
            "rows": [r.as_dict() for r in self.rows],
            "comparisons": self.comparisons,
            "sweep": self.sweep,
            "seconds": round(self.seconds, 1),
        }


def log(opts: Options, msg: str) -> None:
    if not opts.quiet:
        print(msg, file=sys.stderr, flush=True)


def _group(group: Any, /, **update: Any) -> Any:
    """A settings group with fields replaced, validated again."""
    return type(group).model_validate({**group.model_dump(), **update})


def eval_settings(base: Settings, qdrant_path: Path, reranker: dict[str, Any]) -> Settings:
    """The gateway's settings (environment included) pointed at the eval collection.

    Only what would distort the measurement changes: no rerank cache (every query is scored),
    no query-embedding LRU (every configuration pays for its embedding), deadlines wide enough
    that a loaded machine slows the answers down instead of degrading them, and no API keys
    (every query is the default tenant's, whose passages the collection holds).
    """
    return base.model_copy(
        update={
            "server": _group(base.server, deadline_s=60.0),
            "embedder": _group(base.embedder, cache_size=0, timeout_s=60.0),
            "qdrant": _group(base.qdrant, url=None, path=qdrant_path, collection=COLLECTION, timeout_s=60.0),
            "redis": _group(base.redis, url=None),
            "reranker": _group(base.reranker, timeout_s=60.0, **reranker),
            "auth": _group(base.auth, keys=[], keys_file=None, required=False),
        }
    )


async def ask(
    client: httpx.AsyncClient,
    queries: dict[str, str],
    *,
    k: int,
    rerank: bool,
    ef: int | None,
) -> tuple[dict[str, list[str]], list[float], int, int]:
    """Every query through POST /rag, one at a time. Returns rankings (passage ids), latencies
    in ms, how many answers were degraded (reranker skipped) and how many failed."""
    body: dict[str, Any] = {"k": k, "top_n": k, "rerank": rerank}
    if ef is not None:
        body["ef"] = ef
    first = next(iter(queries.values()), None)
    if first is not None:  # warm-up, not timed: first-call costs are not per-query latency
        await client.post("/rag", json={**body, "q": first})
    run: dict[str, list[str]] = {}
    latencies: list[float] = []
    degraded = errors = 0
    for qid, text in queries.items():
        t0 = time.perf_counter()
        resp = await client.post("/rag", json={**body, "q": text})
        latencies.append((time.perf_counter() - t0) * 1000)
        if resp.status_code != 200:
            errors += 1
            run[qid] = []
            continue
        data = resp.json()
        if data["degraded"] or (rerank and not data["reranked"]):
            degraded += 1
        run[qid] = [str(r["payload"]["doc_id"]) for r in data["results"]]
    return run, latencies, degraded, errors


def paired(a: Row, b: Row, metric: str = "ndcg@10", resamples: int = 2000) -> dict[str, Any]:
    """a - b per query: mean, a 95% paired-bootstrap interval, wins/ties/losses."""
    qids = sorted(set(a.summary.per_query) & set(b.summary.per_query))
    diffs = [a.summary.per_query[q][metric] - b.summary.per_query[q][metric] for q in qids]
    out: dict[str, Any] = {"a": a.name, "b": b.name, "metric": metric, "queries": len(diffs)}
    if not diffs:
        return out
    rng = random.Random(0)
    means = sorted(sum(rng.choices(diffs, k=len(diffs))) / len(diffs) for _ in range(resamples))
    out.update(
        delta=sum(diffs) / len(diffs),
        ci95=[percentile(means, 2.5), percentile(means, 97.5)],
        wins=sum(d > 1e-12 for d in diffs),
        ties=sum(abs(d) <= 1e-12 for d in diffs),
        losses=sum(d < -1e-12 for d in diffs),
    )
    return out


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


async def evaluate_dataset(opts: Options, base: Settings | None = None) -> Report:
    t_start = time.perf_counter()
    base = base if base is not None else Settings()
    tenant = base.server.default_tenant
    ds = beir.load(opts.data, opts.split, tenant)
    judged = {q: t for q, t in ds.queries.items() if has_relevant(ds.qrels.get(q))}
    log(
        opts,
        f"{ds.name}: {len(ds.docs)} passages, {len(ds.queries)} queries "
        f"({len(judged)} judged, {len(ds.queries) - len(judged)} without judgments: excluded)",
    )

    t0 = time.perf_counter()
    built: Built = await build_or_load(
        name=ds.name,
        corpus_file=opts.data / "corpus.jsonl",
        docs=ds.docs,
        embedder_settings=base.embedder,
        qdrant_settings=base.qdrant,
        tenant=tenant,
        cache_dir=opts.cache_dir,
        batch_size=opts.batch_size,
        sessions=opts.embed_sessions,
        rebuild=opts.rebuild,
        quiet=opts.quiet,
    )
    build = {**built.meta, "cached": built.cached, "entry": built.path.name}
    log(
        opts,
        f"collection: {'cached' if built.cached else 'built'} ({built.path.name}, "
        f"{time.perf_counter() - t0:.1f}s this run; built in {built.meta['build_seconds']}s)",
    )

    rows: list[Row] = []
    # the baseline: BM25 over the full corpus, in-process, ranking ties as trec_eval does
    index = BM25Index({d.doc_id: d.text for d in ds.docs}, opts.bm25_k1, opts.bm25_b)
    bm25_run: dict[str, list[str]] = {}
    bm25_lat: list[float] = []
    for qid, text in judged.items():
        t0 = time.perf_counter()
        bm25_run[qid] = index.search(text, opts.k)
        bm25_lat.append((time.perf_counter() - t0) * 1000)
    rows.append(
        Row(
            f"BM25 full corpus (k1={opts.bm25_k1:g}, b={opts.bm25_b:g})",
            f"bm25:k1={opts.bm25_k1:g}:b={opts.bm25_b:g}",
            evaluate(bm25_run, ds.qrels, ds.queries),
            bm25_lat,
            bm25_run,
        )
    )

    sweep: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="rag-eval-") as tmp:
        qdrant_path = private_copy(built, Path(tmp))

        def settings_for(**reranker: Any) -> Settings:
            return eval_settings(base, qdrant_path, reranker)

        async def measure(name: str, settings: Settings, rerank: bool, k: int, ef: int | None) -> Row:
            async with running_gateway(settings) as (client, state):
                system = state.reranker.id if (rerank and state.reranker is not None) else "vector order"
                run, lat, degraded, errors = await ask(client, judged, k=k, rerank=rerank, ef=ef)
            return Row(name, system, evaluate(run, ds.qrels, ds.queries), lat, run, degraded, errors)

        lexical = settings_for(kind="lexical")
        w, fusion = lexical.reranker.fusion_weight, lexical.reranker.fusion
        log(opts, "running: dense only, lexical")
        rows.append(await measure("dense only (rerank: false)", lexical, False, opts.k, opts.ef))
        name = f"lexical {fusion}, w={w:g} (default /rag)"
        rows.append(await measure(name, lexical, True, opts.k, opts.ef))
        if fusion != "minmax":  # the default before reciprocal-rank fusion, for comparison
            old = settings_for(kind="lexical", fusion="minmax", fusion_weight=0.2)
            rows.append(await measure("lexical minmax, w=0.2 (old default)", old, True, opts.k, opts.ef))
        if opts.cross_encoder is not None:
            log(opts, "running: cross-encoder")
            ce = settings_for(kind="cross-encoder", model_dir=opts.cross_encoder)
            rows.append(await measure(f"cross-encoder {opts.cross_encoder.name}", ce, True, opts.k, opts.ef))
        if opts.http_reranker is not None:
            log(opts, "running: http reranker")
            http = settings_for(kind="http", url=opts.http_reranker, api=opts.http_api, model=opts.http_model)
            rows.append(await measure(f"http {opts.http_reranker}", http, True, opts.k, opts.ef))
        if opts.sweep:
            sweep = await run_sweep(opts, settings_for, judged, ds.qrels, ds.queries)

    dense = rows[1]
    comparisons = [paired(r, dense) for r in rows if r is not dense]
    report = Report(
        dataset={
            "name": ds.name,
            "passages": len(ds.docs),
            "queries": len(ds.queries),
            "judged_queries": len(judged),
            "unjudged_queries": len(ds.queries) - len(judged),
            "judgments": sum(len(v) for v in ds.qrels.values()),
            "split": opts.split,
        },
        build=build,
        options={
            "k": opts.k,
            "ef": opts.ef if opts.ef is not None else f"ef_default={base.qdrant.ef_default}",
            "fusion": lexical.reranker.fusion,
            "fusion_weight": lexical.reranker.fusion_weight,
            "bm25_k1": lexical.reranker.bm25_k1,
            "bm25_b": lexical.reranker.bm25_b,
            "commit": _git_commit(),
        },
        rows=rows,
        comparisons=comparisons,
        sweep=sweep,
    )
    report.seconds = time.perf_counter() - t_start
    return report


async def run_sweep(
    opts: Options,
    settings_for: Callable[..., Settings],
    judged: dict[str, str],
    qrels: Qrels,
    queries: Iterable[str],
) -> dict[str, Any]:
    """nDCG@10 over a grid: fusion weight x candidate k (lexical reranker), and hnsw ef x k."""

    weights: dict[str, dict[str, float]] = {}
    ids: dict[str, str] = {}
    for w in opts.sweep_weights:
        log(opts, f"sweep: fusion weight {w:g}")
        s = settings_for(kind="lexical", fusion_weight=w)
        async with running_gateway(s) as (client, state):
            ids[f"{w:g}"] = state.reranker.id if state.reranker is not None else "none"
            row = {}
            for k in opts.sweep_k:
                run, *_ = await ask(client, judged, k=k, rerank=True, ef=opts.ef)
                row[str(k)] = evaluate(run, qrels, queries).means["ndcg@10"]
        weights[f"{w:g}"] = row
    ef_grid: dict[str, dict[str, float]] = {}
    s = settings_for(kind="lexical")
    async with running_gateway(s) as (client, _):
        for ef in opts.sweep_ef:
            log(opts, f"sweep: ef {ef}")
            row = {}
            for k in opts.sweep_ef_k:
                run, *_ = await ask(client, judged, k=k, rerank=False, ef=ef)
                row[f"dense k={k}"] = evaluate(run, qrels, queries).means["ndcg@10"]
            run, *_ = await ask(client, judged, k=opts.k, rerank=True, ef=ef)
            row[f"lexical k={opts.k}"] = evaluate(run, qrels, queries).means["ndcg@10"]
            ef_grid[str(ef)] = row
    return {
        "metric": "ndcg@10",
        "fusion_weight_by_k": weights,
        "rerankers": ids,
        "ef": ef_grid,
        "default_fusion_weight": f"{s.reranker.fusion_weight:g}",
        "fusion": s.reranker.fusion,
        "default_ef": str(s.qdrant.ef_default),
    }


# ---------------------------------------------------------------------------------- output


def _f(x: float) -> str:
    return f"{x:.3f}"


def table(report: Report) -> str:
    head = "| system | nDCG@10 | R@10 | R@50 | MRR@10 | p50 ms | p95 ms | notes |"
    lines = [head, "|" + "---|" * 8]
    for r in report.rows:
        notes = []
        if r.degraded:
            notes.append(f"{r.degraded} degraded")
        if r.errors:
            notes.append(f"{r.errors} errors")
        m = r.summary.means
        lines.append(
            f"| {r.name} | {_f(m['ndcg@10'])} | {_f(m['recall@10'])} | {_f(m['recall@50'])} | "
            f"{_f(m['mrr@10'])} | {percentile(r.latency_ms, 50):.1f} | {percentile(r.latency_ms, 95):.1f} | "
            f"{', '.join(notes)} |"
        )
    return "\n".join(lines)


def render(report: Report) -> str:
    d, o, b = report.dataset, report.options, report.build
    out = [
        f"## {d['name']}: {d['passages']} passages, {d['judged_queries']} judged queries "
        f"({d['unjudged_queries']} without judgments excluded), {d['judgments']} judgments",
        "",
        f"k={o['k']} candidates, ef: {o['ef']}; lexical fusion={o['fusion']} weight={o['fusion_weight']:g}, "
        f"bm25 k1={o['bm25_k1']:g} b={o['bm25_b']:g}; embedder {b['embedder']}; "
        f"collection {'from cache' if b['cached'] else 'built'} ({b['points']} points, "
        f"built in {b['build_seconds']}s at {b['passages_per_second']}/s)",
        "",
        table(report),
        "",
        "Latency: per query, sequential, through POST /rag in-process (no socket); the BM25 row is "
        "the eval tool's own in-process scoring, not the gateway.",
    ]
    if report.comparisons:
        out += ["", "| vs dense only (nDCG@10) | delta | 95% CI (paired bootstrap) | better / same / worse |"]
        out.append("|---|---|---|---|")
        for c in report.comparisons:
            if "delta" in c:
                out.append(
                    f"| {c['a']} | {c['delta']:+.4f} | [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}] | "
                    f"{c['wins']} / {c['ties']} / {c['losses']} |"
                )
    if report.sweep:
        out += ["", render_sweep(report.sweep)]
    out += ["", f"{report.seconds:.0f}s in all."]
    return "\n".join(out)


def render_sweep(sweep: dict[str, Any]) -> str:
    wk: dict[str, dict[str, float]] = sweep["fusion_weight_by_k"]
    ks = list(next(iter(wk.values())))
    fusion = sweep.get("fusion", "minmax")
    out = [
        f"### Sweep: nDCG@10, lexical reranker ({fusion} fusion), fusion weight x candidates k",
        "",
        "Weight 0 is the vector order (dense only); 1 is "
        + ("BM25 over the k candidates alone." if fusion == "minmax" else "both ranks weighed equally."),
        "",
    ]
    out.append("| fusion weight | " + " | ".join(f"k={k}" for k in ks) + " |")
    out.append("|---|" + "---|" * len(ks))
    for w, row in wk.items():
        label = f"{w} (default)" if w == sweep.get("default_fusion_weight") else w
        out.append(f"| {label} | " + " | ".join(_f(row[k]) for k in ks) + " |")
    ef: dict[str, dict[str, float]] = sweep["ef"]
    cols = list(next(iter(ef.values())))
    out += ["", "### Sweep: nDCG@10 by hnsw ef (the request's `ef`)", ""]
    out.append("| ef | " + " | ".join(cols) + " |")
    out.append("|---|" + "---|" * len(cols))
    for e, row in ef.items():
        label = f"{e} (default)" if e == sweep.get("default_ef") else e
        out.append(f"| {label} | " + " | ".join(_f(row[c]) for c in cols) + " |")
    return "\n".join(out)


def write(report: Report, results_dir: Path) -> tuple[Path, Path]:
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", str(report.dataset["name"]))
    js, md = results_dir / f"{stamp}-{name}.json", results_dir / f"{stamp}-{name}.md"
    js.write_text(json.dumps(report.as_dict(), indent=1) + "\n")
    md.write_text(render(report) + "\n")
    return js, md


__all__ = ["METRICS", "Options", "Report", "Row", "evaluate_dataset", "render", "table", "write"]
