"""Reading a BEIR-format dataset directory: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.

Passages are read with the bootstrap's reader (`beir_docs`), so the text the eval ranks with
BM25 is byte for byte the text the gateway embeds and reranks (title + "\\n" + text).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from app.corpus import beir_docs
from app.ingest import Document


@dataclass(slots=True)
class Dataset:
    name: str
    directory: Path
    docs: list[Document]
    queries: dict[str, str]  # query id -> text, file order
    qrels: dict[str, dict[str, int]]  # query id -> passage id -> grade


def read_queries(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                out[str(row["_id"])] = str(row["text"])
    return out


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """`query-id <TAB> corpus-id <TAB> score` lines; a header line is skipped."""
    out: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.rstrip("\n").split("\t")
            if not line.strip():
                continue
            if len(parts) < 3:
                raise ValueError(f"{path}:{n}: expected query-id, corpus-id, score")
            try:
                grade = int(float(parts[-1]))
            except ValueError:
                if n == 1:
                    continue  # header
                raise ValueError(f"{path}:{n}: score {parts[-1]!r} is not a number") from None
            out.setdefault(parts[0], {})[parts[1]] = grade
    return out


def load(directory: Path, split: str = "test", tenant: str = "default") -> Dataset:
    for rel in ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"):
        if not (directory / rel).is_file():
            raise FileNotFoundError(f"{directory} is not a BEIR dataset: no {rel}")
    return Dataset(
        name=directory.resolve().name,
        directory=directory,
        docs=list(beir_docs(directory, tenant)),
        queries=read_queries(directory / "queries.jsonl"),
        qrels=read_qrels(directory / "qrels" / f"{split}.tsv"),
    )
