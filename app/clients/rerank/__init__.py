"""Rerankers: score (query, candidate passages) pairs. Selected by `RAG_RERANKER__KIND`.

- lexical (default, `lexical.py`): BM25 over the candidate passages, fused with the vector
  score; its tokenizer is `tokenize.py` (import `tokenize` from there: the package attribute
  of that name is the module).
- cross-encoder (`cross_encoder.py`): a sentence-transformers-compatible cross-encoder
  directory, run with onnxruntime when it holds `model.onnx`, otherwise with torch.
- http (`http.py`): a remote reranker speaking TEI `POST /rerank` or Cohere-style
  `POST /v1/rerank`.

Every reranker returns one finite float per candidate, in candidate order; anything else is a
DependencyBadResponse (`check_scores`, in `pool.py`). CPU-bound work runs on a worker pool, at
most `concurrency` at once. `id` names the model and its revision: it is part of the rerank
cache key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from app.clients.rerank.cross_encoder import CrossEncoderReranker
from app.clients.rerank.http import HttpReranker
from app.clients.rerank.lexical import LexicalReranker, bm25_scores
from app.clients.rerank.pool import DEPENDENCY, check_scores
from app.settings import RerankerSettings
from app.types import Candidate

__all__ = [
    "DEPENDENCY",
    "CrossEncoderReranker",
    "HttpReranker",
    "LexicalReranker",
    "Reranker",
    "bm25_scores",
    "check_scores",
    "reranker_from_settings",
]


class Reranker(Protocol):
    id: str

    async def score(self, query: str, candidates: Sequence[Candidate]) -> list[float]: ...

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


def reranker_from_settings(s: RerankerSettings) -> Reranker | None:
    if s.kind == "none":
        return None
    if s.kind == "http":
        return HttpReranker.from_settings(s)
    if s.kind == "cross-encoder":
        return CrossEncoderReranker.from_settings(s)
    return LexicalReranker.from_settings(s)
