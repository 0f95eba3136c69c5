"""A vector store whose index is defective on purpose, for the tests of the search checks
(app/search.py): the real store, except that what it answers through its index (not exact
search, not counts) can lose points."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from app.types import Candidate, Filters


class DefectiveIndex:
    """Wraps a real store. Index answers never show the points in `lost`, and a search through
    the index returns at most `keep` hits (all when None). Exact searches are answered in full,
    and counted in `exact_searches`; every other call goes to the real store unchanged."""

    def __init__(self, inner: Any, keep: int | None = None) -> None:
        self._inner = inner
        self.lost: set[str] = set()
        self.keep = keep
        self.exact_searches = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def search(
        self,
        vector: npt.NDArray[np.float32],
        k: int,
        ef: int,
        tenant: str,
        filters: Filters,
        exact: bool = False,
    ) -> list[Candidate]:
        if exact:
            self.exact_searches += 1
            found: list[Candidate] = await self._inner.search(vector, k, ef, tenant, filters, True)
            return found
        hits: list[Candidate] = await self._inner.search(vector, k + len(self.lost), ef, tenant, filters)
        return [h for h in hits if h.id not in self.lost][:k][: self.keep]

    async def nearest_ids(
        self, vectors: npt.NDArray[np.float32], k: int, ef: int, tenant: str
    ) -> list[list[tuple[str, float]]]:
        found: list[list[tuple[str, float]]] = await self._inner.nearest_ids(
            vectors, k + len(self.lost), ef, tenant
        )
        return [[(i, s) for i, s in hits if i not in self.lost][:k] for hits in found]
