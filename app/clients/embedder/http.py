"""Query embedding by a remote service: TEI `POST /embed` or OpenAI-style `POST /v1/embeddings`.

Transport failures and HTTP statuses become app.errors types through app/clients/http.py; an
answer that is not one finite vector of the right size per text is a DependencyBadResponse.
"""

from __future__ import annotations

import httpx
import numpy as np
import numpy.typing as npt

from app.clients.embedder.vectors import DEPENDENCY, Vector, normalize_rows, query_cache, remember
from app.clients.http import HttpBackend, raise_for_http_error, translate_http_errors
from app.errors import DependencyBadResponse
from app.settings import EmbedderSettings


class HttpEmbedder(HttpBackend):
    """A remote embedding service: TEI `POST /embed` or OpenAI-style `POST /v1/embeddings`."""

    dependency = DEPENDENCY

    def __init__(self, settings: EmbedderSettings, client: httpx.AsyncClient, dim: int) -> None:
        super().__init__(client)
        self._s = settings
        self.dim = dim
        # what the collection records: a remote service serving the ONNX model's very weights
        # may say so (RAG_EMBEDDER__ID); otherwise its vectors are its own
        self.id = settings.id or f"http:{settings.api}:{settings.model}"
        self._cache = query_cache(settings.cache_size)

    @classmethod
    def from_settings(cls, s: EmbedderSettings, dim: int = 384) -> HttpEmbedder:
        assert s.url is not None  # checked by EmbedderSettings
        client = httpx.AsyncClient(base_url=s.url, timeout=s.timeout_s)
        return cls(s, client, dim)

    async def embed(self, text: str) -> Vector:
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        vec: Vector = (await self.embed_batch([text]))[0]
        remember(self._cache, text, vec)
        return vec

    async def embed_batch(self, texts: list[str]) -> npt.NDArray[np.float32]:
        if self._s.api == "tei":
            path, body = "/embed", {"inputs": texts, "normalize": True, "truncate": True}
        else:
            path, body = "/v1/embeddings", {"input": texts, "model": self._s.model}
        with translate_http_errors(DEPENDENCY):
            resp = await self._client.post(path, json=body)
        raise_for_http_error(DEPENDENCY, resp)
        try:
            data = resp.json()
            if self._s.api == "tei":
                rows = data
            else:
                rows = [d["embedding"] for d in sorted(data["data"], key=lambda d: d["index"])]
            arr = np.asarray(rows, dtype=np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            raise DependencyBadResponse(DEPENDENCY, f"malformed embedding response: {exc}") from exc
        if arr.shape != (len(texts), self.dim) or not np.isfinite(arr).all():
            raise DependencyBadResponse(DEPENDENCY, f"expected {len(texts)}x{self.dim} finite vectors")
        return normalize_rows(arr)
