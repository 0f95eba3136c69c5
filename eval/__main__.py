"""Retrieval quality of the gateway on a BEIR-format dataset.

    python -m eval --data DIR[,DIR...] [--sweep] [--cross-encoder MODEL_DIR] [--http-reranker URL]

Builds (or reuses from the cache) an embedded collection of DIR/corpus.jsonl with the ingest
code, runs every judged query of DIR/queries.jsonl through POST /rag of the real app, and
prints a table of nDCG@10, Recall@10, Recall@50, MRR@10 and per-query latency for: BM25 over
the full corpus (the baseline, computed here), dense only (rerank: false), the lexical
reranker (the default /rag), the lexical reranker with min-max fusion (the old default, for
comparison), and a cross-encoder or an http reranker when given. The gateway's
RAG_* settings apply (e.g. RAG_RERANKER__FUSION_WEIGHT, RAG_QDRANT__EF_DEFAULT). Results are
also written to eval/results/<UTC timestamp>-<dataset>.json and .md.

--data may name several datasets (comma-separated, or a directory of dataset directories): each
is evaluated in turn, then a summary table compares the default with dense-only on every one,
with a worst-case row.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from pathlib import Path

from eval.collection import default_sessions
from eval.multi import dataset_dirs, render_summary
from eval.run import Options, Report, evaluate_dataset, render, write


def parse(argv: list[str] | None) -> Options:
    return parse_all(argv)[0]


def parse_all(argv: list[str] | None) -> list[Options]:
    """One Options per dataset named by --data."""
    p = argparse.ArgumentParser(
        prog="python -m eval",
        description=__doc__.split("\n")[0],
        epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--data",
        required=True,
        metavar="DIR",
        help="BEIR-format dataset directory; several comma-separated, or a directory of them",
    )
    p.add_argument("--split", default="test", help="qrels split: DIR/qrels/<split>.tsv (default test)")
    p.add_argument("-k", "--k", type=int, default=100, help="candidates fetched and reranked (default 100)")
    p.add_argument("--ef", type=int, help="hnsw_ef sent with each query (default: the gateway's policy)")
    p.add_argument("--bm25-k1", type=float, default=0.9, help="baseline BM25 k1 (default 0.9)")
    p.add_argument("--bm25-b", type=float, default=0.4, help="baseline BM25 b (default 0.4)")
    p.add_argument(
        "--cross-encoder", type=Path, metavar="MODEL_DIR", help="also rank with this cross-encoder"
    )
    p.add_argument("--http-reranker", metavar="URL", help="also rank with this remote reranker")
    p.add_argument("--http-api", choices=["tei", "cohere"], default="tei", help="its API (default tei)")
    p.add_argument("--http-model", default="rerank", help="model name for a Cohere-style API")
    p.add_argument("--sweep", action="store_true", help="also sweep fusion weight x k and ef x k")
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=Path("data/eval-cache"),
        help="where built collections are cached (default data/eval-cache)",
    )
    p.add_argument("--rebuild", action="store_true", help="rebuild the cached collection")
    p.add_argument("--batch-size", type=int, default=16, help="passages embedded per batch (default 16)")
    p.add_argument(
        "--embed-sessions",
        type=int,
        default=default_sessions(),
        help=f"single-threaded model sessions embedding in parallel (default {default_sessions()}: the CPUs)",
    )
    p.add_argument(
        "--results-dir",
        type=Path,
        default=Path(__file__).resolve().parent / "results",
        help="where the .md and .json reports go (default eval/results)",
    )
    p.add_argument("--no-write", action="store_true", help="print only; write no result files")
    a = p.parse_args(argv)
    try:
        dirs = dataset_dirs(a.data)
    except ValueError as exc:
        p.error(f"{exc}: not a BEIR-format dataset")
    if not 1 <= a.k <= 200:
        p.error("--k must be in 1..200 (the API's limit)")
    return [_options(a, d) for d in dirs]


def _options(a: argparse.Namespace, data: Path) -> Options:
    """Options for one dataset: every option flag lands on the Options field of the same name."""
    flags = {f.name: getattr(a, f.name) for f in dataclasses.fields(Options) if hasattr(a, f.name)}
    return Options(**{**flags, "data": data, "results_dir": None if a.no_write else a.results_dir})


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # each configuration starts the app, which warns that the rerank cache and API keys are off:
    # the eval turns them off on purpose
    logging.getLogger("rag").setLevel(logging.ERROR)
    reports: list[Report] = []
    for opts in parse_all(argv):
        report = asyncio.run(evaluate_dataset(opts))
        reports.append(report)
        print(render(report) + "\n")
        if opts.results_dir is not None:
            js, md = write(report, opts.results_dir)
            print(f"written: {md} and {js.name}", file=sys.stderr)
    if len(reports) > 1:
        print(render_summary(reports))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
