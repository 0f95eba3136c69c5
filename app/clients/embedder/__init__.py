"""Query embedding: the in-process ONNX model (default, `onnx.py`) or a remote embedding service
over HTTP (`http.py`). Selected by `RAG_EMBEDDER__KIND`.

Both return L2-normalised float32 vectors of `dim` values and keep a small LRU of recent query
embeddings (`vectors.py`). Library exceptions become app.errors types: httpx's through
app/clients/http.py, the model runtime's through app/clients/inference.py.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from app.clients.embedder.http import HttpEmbedder
from app.clients.embedder.onnx import OnnxEmbedder
from app.clients.embedder.vectors import DEPENDENCY, Vector
from app.settings import EmbedderSettings

__all__ = ["DEPENDENCY", "Embedder", "HttpEmbedder", "OnnxEmbedder", "Vector", "embedder_from_settings"]


class Embedder(Protocol):
    id: str
    dim: int

    async def embed(self, text: str) -> Vector: ...

    async def embed_batch(self, texts: list[str]) -> npt.NDArray[np.float32]: ...

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


def embedder_from_settings(s: EmbedderSettings) -> Embedder:
    if s.kind == "http":
        return HttpEmbedder.from_settings(s)
    return OnnxEmbedder.from_settings(s)
