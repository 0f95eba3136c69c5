"""What both embedders share: the vector type, L2 normalisation and the query-embedding cache."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from cachetools import LRUCache

Vector = npt.NDArray[np.float32]
DEPENDENCY = "embedder"


def normalize_rows(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out: npt.NDArray[np.float32] = (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    return out


def query_cache(size: int) -> LRUCache[str, Vector]:
    """Query text -> embedding, the least recently used evicted first: identical queries skip
    the model entirely. Size 0 keeps nothing (see `remember`)."""
    return LRUCache(maxsize=max(size, 0))


def remember(cache: LRUCache[str, Vector], text: str, vector: Vector) -> None:
    if cache.maxsize > 0:  # a cache of size 0 refuses every item
        cache[text] = vector
