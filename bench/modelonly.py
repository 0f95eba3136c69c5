"""The model's own cost per query: the line S2's CPU per request is held against.

S2 sends distinct queries, so every request embeds one. What the gateway may spend beyond the
model is HTTP, validation, search, the rerank-cache lookup and serialisation; this measures the
part it cannot avoid. The same kind of distinct queries are embedded in this process, straight
through `OnnxEmbedder.encode` (no event loop, no batcher, no cache), in batches of 16 (the
gateway's micro-batch ceiling) for a fixed time after a short warm-up. CPU is this process's
`time.process_time()` delta (every thread: onnxruntime's intra-op threads included), taken
before any server starts, so nothing else runs in the process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BATCH = 16
WARMUP_BATCHES = 8


def measure(model_dir: Path, queries: Iterator[str], seconds: float, batch: int = BATCH) -> dict[str, Any]:
    """{"batch", "queries", "wall_s", "qps", "cpu_ms_per_query"} of `seconds` of batches."""
    from app.clients.embedder import OnnxEmbedder

    embedder = OnnxEmbedder(model_dir, cache_size=0)
    try:
        for _ in range(WARMUP_BATCHES):
            embedder.encode([next(queries) for _ in range(batch)])
        done, wall, cpu = 0, 0.0, 0.0
        while wall < seconds:
            texts = [next(queries) for _ in range(batch)]  # cutting queries is not the model's cost
            cpu0, t0 = time.process_time(), time.perf_counter()
            embedder.encode(texts)
            wall += time.perf_counter() - t0
            cpu += time.process_time() - cpu0
            done += len(texts)
    finally:
        asyncio.run(embedder.aclose())
    return {
        "batch": batch,
        "queries": done,
        "wall_s": round(wall, 3),
        "qps": round(done / wall, 1),
        "cpu_ms_per_query": round(cpu / done * 1000, 4),
    }
