"""The embedded engine's payloads, kept in process (docs/ARCHITECTURE.md, "Payload cache").

A search that asks the engine for 50 payloads spends about twice the CPU of the search itself
(measured on a 2,000-point shard: 0.42 against 0.18 ms), half of it converting them into Python
objects on the event loop. Passages repeat between searches, so EdgeStore searches for ids and
scores only and takes the payloads from here, asking the engine for the ones it does not hold.

It is exact, not a TTL cache: one process owns an embedded shard, and every write to it goes
through its EdgeStore, on the store's one thread, as do the searches that fill this cache. A
write drops the ids it touched after the engine applied it (and the whole cache if the write
failed part-way), before any later search runs. Bounded in bytes (LRU); used from the store's
thread only, so it needs no lock. The payloads it hands out are shared: readers must not
change them (the pipeline copies before it edits).
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from cachetools import LRUCache

from app.clients.vectorstore.shared import DEPENDENCY
from app.errors import DependencyUnavailable
from app.types import Candidate

ENTRY_OVERHEAD = 400  # bytes of a dict with ~10 keys and its LRU slot, beyond the text it holds


def payload_bytes(payload: dict[str, Any]) -> int:
    """About what a payload holds in memory: its strings' characters plus a fixed overhead
    (what bounds the cache, not an exact count)."""
    size = ENTRY_OVERHEAD
    for key, value in payload.items():
        size += len(key) + (len(value) if isinstance(value, str) else sys.getsizeof(value))
    return size


def point_key(pid: Any) -> str:
    """The id as the engine reports it: a UUID in its canonical text, an integer as digits."""
    if isinstance(pid, str):
        try:
            return str(uuid.UUID(pid))
        except ValueError:
            return pid
    return str(pid)


class PayloadCache:
    """Point id (canonical text) -> payload, at most `max_bytes` (0: holds nothing)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._lru: LRUCache[str, dict[str, Any]] = LRUCache(
            maxsize=max(1, max_bytes), getsizeof=payload_bytes
        )

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def get(self, key: str) -> dict[str, Any] | None:
        return self._lru.get(key)

    def put(self, key: str, payload: dict[str, Any]) -> None:
        if payload_bytes(payload) <= self.max_bytes:  # a payload larger than the cache is not kept
            self._lru[key] = payload

    def candidates(
        self, found: list[Any], read: Callable[[list[str]], Iterable[Any]]
    ) -> list[list[Candidate]]:
        """The engine's hits (pages of points with ids and scores, no payloads) as candidates,
        their payloads from here; `read(ids)` returns the engine's records of the ones missing,
        in one call. Called on the store's thread, so no write runs between search and read."""
        hits = [[(str(h.id), float(h.score)) for h in page] for page in found]
        payloads: dict[str, dict[str, Any]] = {}
        missing: set[str] = set()
        for page in hits:
            for pid, _ in page:
                p = self._lru.get(pid)
                if p is None:
                    missing.add(pid)
                else:
                    payloads[pid] = p
        if missing:
            for r in read(list(missing)):
                pid, p = str(r.id), r.payload or {}
                payloads[pid] = p
                self.put(pid, p)
        out: list[list[Candidate]] = []
        for page in hits:
            row = []
            for pid, score in page:
                p = payloads.get(pid)
                if p is None:  # a point the search found and the engine cannot read: never dropped
                    raise DependencyUnavailable(
                        DEPENDENCY, f"the engine found point {pid} and cannot read it"
                    )
                row.append(Candidate(pid, score, p))
            out.append(row)
        return out

    def drop(self, ids: Iterable[Any]) -> None:
        for pid in ids:
            self._lru.pop(point_key(pid), None)

    def clear(self) -> None:
        self._lru.clear()

    def __len__(self) -> int:
        return len(self._lru)

    @property
    def bytes(self) -> int:
        return int(self._lru.currsize)
