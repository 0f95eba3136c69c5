"""Query embedding: the in-process ONNX model (default, `onnx.py`) or a remote embedding service
over HTTP (`http.py`). Selected by `RAG_EMBEDDER__KIND`.

Both return L2-normalised float32 vectors of `dim` values and keep a small LRU of recent query
embeddings (`vectors.py`). Library exceptions become app.errors types: httpx's through
app/clients/http.py, the model runtime's through app/clients/inference.py.
"""

from __future__ import annotations

import json
from typing import Protocol

import numpy as np
import numpy.typing as npt

from app.clients.embedder.http import HttpEmbedder
from app.clients.embedder.onnx import OnnxEmbedder, weights
from app.clients.embedder.vectors import DEPENDENCY, Vector
from app.settings import EmbedderSettings

__all__ = [
    "DEPENDENCY",
    "Embedder",
    "HttpEmbedder",
    "OnnxEmbedder",
    "Vector",
    "configured_id",
    "embedder_from_settings",
]


class Embedder(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    async def embed(self, text: str) -> Vector: ...

    async def embed_batch(self, texts: list[str]) -> npt.NDArray[np.float32]: ...

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


def embedder_from_settings(s: EmbedderSettings) -> Embedder:
    if s.kind == "http":
        return HttpEmbedder.from_settings(s)
    return OnnxEmbedder.from_settings(s)


def configured_id(s: EmbedderSettings) -> str:
    """The id the embedder of `s` has, without loading it (the model's manifest, or the remote
    service's configured id)."""
    if s.kind == "http":
        return s.id or f"http:{s.api}:{s.model}"
    path = s.model_dir / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(
            f"no exported model in {s.model_dir}: run `python scripts/export_onnx.py --out {s.model_dir}`"
        )
    manifest = json.loads(path.read_text())
    return weights(s.model_dir, manifest, s.variant)[1]
