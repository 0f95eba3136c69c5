"""Core types the pipeline passes between its stages (see docs/ARCHITECTURE.md, "Module map").

They live here, not in a client module, so the cache, the rerankers, the search checks and the
eval depend on the shape of a candidate and not on the vector store that produced it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

FilterValue = str | int | bool
Filters = Mapping[str, Sequence[FilterValue]]
POINT_NAMESPACE = uuid.UUID("6f1c1c0e-3a53-4c0b-9a36-6b2f8d1d2a10")


def point_id(tenant: str, doc_id: str, chunk: int = 0) -> str:
    """Stable point id: the same document id in two tenants is two points. A document's first
    chunk keeps the id a whole document always had, so unchunked collections stay valid."""
    if chunk == 0:
        return str(uuid.uuid5(POINT_NAMESPACE, f"{tenant}\x00{doc_id}"))
    return str(uuid.uuid5(POINT_NAMESPACE, f"{tenant}\x00{doc_id}\x00{chunk}"))


@dataclass(slots=True)
class Candidate:
    """One passage found by the vector store, later rescored by the reranker."""

    id: str
    score: float
    payload: dict[str, Any]

    @property
    def text(self) -> str:
        return str(self.payload.get("text", ""))


@dataclass(slots=True)
class PointIn:
    """One passage to write: its point id, its vector and its payload."""

    id: str
    vector: npt.NDArray[np.float32]
    payload: dict[str, Any] = field(default_factory=dict)
