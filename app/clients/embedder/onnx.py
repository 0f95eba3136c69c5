"""Query embedding: the in-process ONNX model (default) or a remote embedding service over HTTP.

Owns the tokenizer and the onnxruntime session (or the httpx client), mean pooling and L2
normalisation, a small LRU of recent query embeddings, and micro-batching: query embeddings
that miss the LRU while the model is busy wait and go through the model together in one call
(one batch of 8 short queries costs about 2-3 single ones on CPU). Library exceptions become
app.errors types here.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import httpx
import numpy as np
import numpy.typing as npt

from app.clients.http import raise_for_http_error, translate_http_errors
from app.errors import DependencyBadResponse, DependencyUnavailable
from app.settings import EmbedderSettings

Vector = npt.NDArray[np.float32]
DEPENDENCY = "embedder"


class Embedder(Protocol):
    id: str
    dim: int

    async def embed(self, text: str) -> Vector: ...

    async def embed_batch(self, texts: list[str]) -> npt.NDArray[np.float32]: ...

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


class _Lru:
    """Query text -> embedding; identical queries skip the model entirely."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[str, Vector] = OrderedDict()

    def get(self, key: str) -> Vector | None:
        v = self._data.get(key)
        if v is not None:
            self._data.move_to_end(key)
        return v

    def put(self, key: str, value: Vector) -> None:
        if self.size <= 0:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        if len(self._data) > self.size:
            self._data.popitem(last=False)


def _normalize_rows(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out: npt.NDArray[np.float32] = (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    return out


class OnnxEmbedder:
    """all-MiniLM-L6-v2 exported by scripts/export_onnx.py, run with onnxruntime + tokenizers."""

    def __init__(
        self, model_dir: Path, threads: int = 0, cache_size: int = 4096, max_batch: int = 16
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        manifest_path = model_dir / "manifest.json"
        if not manifest_path.exists():
            raise FileNotFoundError(
                f"no exported model in {model_dir}: run `python scripts/export_onnx.py --out {model_dir}`"
            )
        manifest = json.loads(manifest_path.read_text())
        self.dim = int(manifest["dim"])
        self.id = f"{manifest['model']}@{manifest['revision']}"
        self.max_length = int(manifest["max_length"])
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_length=self.max_length)
        self._tokenizer.enable_padding()
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # no busy-waiting between ops: on a loaded server the spinning intra-op threads burned
        # as much CPU as the model itself (measured 13 vs 6 ms CPU per query on 2 cores)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(
            str(model_dir / "model.onnx"), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self._session.get_inputs()}
        # onnxruntime releases the GIL while it computes: one worker keeps the event loop free
        # and keeps the model's own intra-op threads from being oversubscribed.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
        self._cache = _Lru(cache_size)
        self.max_batch = max(1, max_batch)
        self._pending: dict[str, list[asyncio.Future[Vector]]] = {}
        self._drainer: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, s: EmbedderSettings) -> OnnxEmbedder:
        return cls(s.model_dir, threads=s.threads, cache_size=s.cache_size)

    def encode(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """Blocking: tokenize, run the model, mean-pool over real tokens, L2-normalise."""
        encs = self._tokenizer.encode_batch(texts)
        ids = np.asarray([e.ids for e in encs], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encs], dtype=np.int64)
        feeds: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        (tokens,) = self._session.run(["token_embeddings"], feeds)
        m = mask[:, :, None].astype(np.float32)
        pooled = (tokens * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        return _normalize_rows(pooled.astype(np.float32))

    async def embed(self, text: str) -> Vector:
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        fut: asyncio.Future[Vector] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(text, []).append(fut)
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.ensure_future(self._drain())
        return await fut

    async def _drain(self) -> None:
        """Embed what is pending, batch after batch, until nothing is: requests that arrive while
        the model runs are served by the next batch; an idle embedder starts at once."""
        loop = asyncio.get_running_loop()
        while self._pending:
            texts = list(self._pending)[: self.max_batch]
            waiters = [self._pending.pop(t) for t in texts]
            if all(f.done() for fs in waiters for f in fs):
                continue  # every caller gave up (deadline, disconnect)
            try:
                vectors = await loop.run_in_executor(self._pool, self._encode_grouped, texts)
            except BaseException as exc:
                cancelled = isinstance(exc, asyncio.CancelledError)
                for fs in waiters:
                    for f in fs:
                        if f.done():
                            continue
                        if cancelled:
                            f.cancel()
                        else:
                            f.set_exception(exc)
                if cancelled:
                    raise
                continue
            for text, vec, fs in zip(texts, vectors, waiters, strict=True):
                self._cache.put(text, vec)
                for f in fs:
                    if not f.done():
                        f.set_result(vec)

    def _encode_grouped(self, texts: list[str]) -> list[Vector]:
        """Blocking: one model call per group of similar length (padding to one long query
        would make every short one in the batch pay for its length). One row copy per text,
        so a cached vector does not keep its whole batch alive."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list[Vector | None] = [None] * len(texts)
        start = 0
        while start < len(order):
            end = start + 1
            limit = 2 * len(texts[order[start]]) + 32
            while end < len(order) and len(texts[order[end]]) <= limit:
                end += 1
            group = order[start:end]
            vectors = self.encode([texts[i] for i in group])
            for row, i in enumerate(group):
                out[i] = vectors[row].copy()
            start = end
        return [v for v in out if v is not None]

    async def embed_batch(self, texts: list[str]) -> npt.NDArray[np.float32]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.encode, texts)

    async def ping(self) -> None:
        return None  # in-process: loaded means ready

    async def aclose(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class HttpEmbedder:
    """A remote embedding service: TEI `POST /embed` or OpenAI-style `POST /v1/embeddings`."""

    def __init__(self, settings: EmbedderSettings, client: httpx.AsyncClient, dim: int) -> None:
        self._s = settings
        self._client = client
        self.dim = dim
        self.id = f"http:{settings.api}:{settings.model}"
        self._cache = _Lru(settings.cache_size)

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
        self._cache.put(text, vec)
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
        return _normalize_rows(arr)

    async def ping(self) -> None:
        with translate_http_errors(DEPENDENCY):
            resp = await self._client.get("/health")
        if resp.status_code >= 400:
            raise DependencyUnavailable(DEPENDENCY, f"health answered {resp.status_code}")

    async def aclose(self) -> None:
        await self._client.aclose()


def embedder_from_settings(s: EmbedderSettings) -> Embedder:
    if s.kind == "http":
        return HttpEmbedder.from_settings(s)
    return OnnxEmbedder.from_settings(s)
