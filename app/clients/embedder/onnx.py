"""Query embedding with the in-process ONNX model (the default).

Owns the tokenizer and the onnxruntime session, mean pooling and L2 normalisation, a small LRU
of recent query embeddings, and micro-batching: query embeddings that miss the LRU while the
model is busy wait and go through the model together in one call (one batch of 8 short
queries costs about 2-3 single ones on CPU). A failing model run becomes an app.errors type
through app/clients/inference.py (a 503, never a 500).
"""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.clients.embedder.vectors import DEPENDENCY, Vector, normalize_rows, query_cache, remember
from app.clients.inference import translate_model_errors
from app.settings import EmbedderSettings

# texts per model call for ingestion: what a query may wait behind. Passages are long (up to the
# model's 256 tokens), so batching them saves little: measured on 2 loaded cores, ~110-token
# passages cost 63-68 ms CPU each one or two per call, 89 at four, 95-109 at eight; and eight
# made a query wait ~1 s behind one call
INGEST_CALL_TEXTS = 2
# the share of the model's time ingestion takes while queries keep it busy: after a call of d
# seconds, ingestion lets pending queries go first for up to d * (1 / share - 1)
# (RAG_EMBEDDER__INGEST_SHARE; 1 turns the lane off)
INGEST_SHARE = 0.25
# queries up to this many characters (~30 tokens) go through the model together whatever their
# lengths: padding them costs no more than another call (batches of 16 distinct queries of 8-72
# characters, six alternating runs: 2.55-2.74 ms of CPU per query together, 2.61-2.87 split)
GROUP_FLOOR_CHARS = 128


class OnnxEmbedder:
    """all-MiniLM-L6-v2 exported by scripts/export_onnx.py, run with onnxruntime + tokenizers."""

    def __init__(
        self,
        model_dir: Path,
        threads: int = 0,
        cache_size: int = 4096,
        max_batch: int = 16,
        ingest_share: float = INGEST_SHARE,
        variant: str = "fp32",
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
        weights_file, self.id = weights(model_dir, manifest, variant)
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
            str(weights_file), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self._session.get_inputs()}
        # onnxruntime releases the GIL while it computes: one worker keeps the event loop free
        # and keeps the model's own intra-op threads from being oversubscribed.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
        self._cache = query_cache(cache_size)
        self.max_batch = max(1, max_batch)
        self._pending: dict[str, list[asyncio.Future[Vector]]] = {}
        self._drainer: asyncio.Task[None] | None = None
        if not 0 < ingest_share <= 1:
            raise ValueError("ingest_share must be in (0, 1]")
        self._yield_factor = 1 / ingest_share - 1

    @classmethod
    def from_settings(cls, s: EmbedderSettings) -> OnnxEmbedder:
        return cls(
            s.model_dir,
            threads=s.threads,
            cache_size=s.cache_size,
            ingest_share=s.ingest_share,
            variant=s.variant,
        )

    def encode(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """Blocking: tokenize, run the model, mean-pool over real tokens, L2-normalise. A
        failure of the tokenizer or the model is a DependencyError (app/clients/inference.py)."""
        with translate_model_errors(DEPENDENCY, "model"):
            encs = self._tokenizer.encode_batch(texts)
            ids = np.asarray([e.ids for e in encs], dtype=np.int64)
            mask = np.asarray([e.attention_mask for e in encs], dtype=np.int64)
            feeds: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._inputs:
                feeds["token_type_ids"] = np.zeros_like(ids)
            (tokens,) = self._session.run(["token_embeddings"], feeds)
            m = mask[:, :, None].astype(np.float32)
            pooled = (tokens * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        return normalize_rows(pooled.astype(np.float32))

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
                remember(self._cache, text, vec)
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
            limit = max(2 * len(texts[order[start]]) + 32, GROUP_FLOOR_CHARS)
            while end < len(order) and len(texts[order[end]]) <= limit:
                end += 1
            group = order[start:end]
            vectors = self.encode([texts[i] for i in group])
            for row, i in enumerate(group):
                out[i] = vectors[row].copy()
            start = end
        return [v for v in out if v is not None]

    async def embed_batch(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """Ingestion's embeddings, a few texts per model call, each after the queries waiting
        for the model (queries first; see docs/ARCHITECTURE.md, "Ingestion jobs"): a query that
        arrives meanwhile waits for one small call, never a whole batch, and while queries keep
        the model busy ingestion takes INGEST_SHARE of its time, so it slows down but never
        stops."""
        loop = asyncio.get_running_loop()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = []
        spent = 0.0  # seconds the last ingestion call ran the model
        for i in range(0, len(texts), INGEST_CALL_TEXTS):
            await self._after_queries(spent * self._yield_factor)
            vectors, spent = await loop.run_in_executor(
                self._pool, self._timed_encode, texts[i : i + INGEST_CALL_TEXTS]
            )
            parts.append(vectors)
        return np.concatenate(parts)

    def _timed_encode(self, texts: list[str]) -> tuple[npt.NDArray[np.float32], float]:
        t0 = time.perf_counter()
        vectors = self.encode(texts)
        return vectors, time.perf_counter() - t0

    async def _after_queries(self, budget_s: float) -> None:
        """Wait while query embeddings are pending or running, for at most `budget_s`."""
        loop = asyncio.get_running_loop()
        end = loop.time() + budget_s
        while self._drainer is not None and not self._drainer.done():
            left = end - loop.time()
            if left <= 0:
                return
            await asyncio.wait({self._drainer}, timeout=left)

    async def ping(self) -> None:
        return None  # in-process: loaded means ready

    async def aclose(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def weights(model_dir: Path, manifest: dict[str, Any], variant: str) -> tuple[Path, str]:
    """The weights file of a variant and the embedder id it gives. The id names the exact
    weights (their sha256 revision), so vectors of one variant are never taken for the other's."""
    if variant == "fp32":
        return model_dir / "model.onnx", f"{manifest['model']}@{manifest['revision']}"
    entry = manifest.get("variants", {}).get(variant)
    if entry is None or not (model_dir / entry["file"]).exists():
        raise FileNotFoundError(
            f"no {variant} weights in {model_dir}: run `python scripts/export_onnx.py --out {model_dir}`"
        )
    return model_dir / entry["file"], f"{manifest['model']}:{variant}@{entry['revision']}"
