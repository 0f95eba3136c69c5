"""Several datasets in one run: which directories, and the summary table across them.

`--data` takes one BEIR directory, a comma-separated list of them, or a directory whose
subdirectories are BEIR datasets (every one with a corpus.jsonl, in name order). Each dataset
gets its own report; the summary puts them side by side: nDCG@10 of BM25, dense-only and the
default /rag, the default's R@10, R@50 and MRR@10, and the default's nDCG@10 delta against
dense-only with its 95% paired-bootstrap interval; the last row is the worst case (the dataset
where the default does worst against dense-only), which is what a default is chosen by.
"""

from __future__ import annotations

from pathlib import Path

from eval.run import Report


def dataset_dirs(spec: str) -> list[Path]:
    """The BEIR dataset directories named by `spec` (see the module doc). ValueError if none."""
    out: list[Path] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        path = Path(part)
        if (path / "corpus.jsonl").is_file():
            out.append(path)
        elif path.is_dir():
            found = sorted(d for d in path.iterdir() if (d / "corpus.jsonl").is_file())
            if not found:
                raise ValueError(f"{path} is not a BEIR dataset and holds none")
            out.extend(found)
        else:
            raise ValueError(f"{path} is not a BEIR dataset (no corpus.jsonl)")
    if not out:
        raise ValueError("no dataset given")
    return out


def _row(report: Report, prefix: str) -> dict[str, float]:
    for r in report.rows:
        if r.name.startswith(prefix):
            return r.summary.means
    raise KeyError(prefix)


def _default_vs_dense(report: Report) -> dict[str, object]:
    for c in report.comparisons:
        if str(c["a"]).endswith("(default /rag)") and "delta" in c:
            return c
    return {}


def render_summary(reports: list[Report]) -> str:
    lines = [
        "## Summary across datasets",
        "",
        "| dataset | judged queries | BM25 nDCG@10 | dense nDCG@10 | default nDCG@10 | default R@10 "
        "| default R@50 | default MRR@10 | default − dense | 95% CI |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    worst: tuple[float, str] | None = None
    for rep in reports:
        bm25, dense, default = _row(rep, "BM25"), _row(rep, "dense only"), _row(rep, "lexical")
        c = _default_vs_dense(rep)
        delta = float(c["delta"]) if c else float("nan")  # type: ignore[arg-type]
        ci = c.get("ci95") if c else None
        name = str(rep.dataset["name"])
        lines.append(
            f"| {name} | {rep.dataset['judged_queries']} | {bm25['ndcg@10']:.4f} | {dense['ndcg@10']:.4f} "
            f"| {default['ndcg@10']:.4f} | {default['recall@10']:.4f} | {default['recall@50']:.4f} "
            f"| {default['mrr@10']:.4f} | {delta:+.4f} | "
            + (f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if isinstance(ci, list) else "")
            + " |"
        )
        if c and (worst is None or delta < worst[0]):
            worst = (delta, name)
    if worst is not None:
        lines.append(f"| **worst case** ({worst[1]}) | | | | | | | | **{worst[0]:+.4f}** | |")
    return "\n".join(lines)
