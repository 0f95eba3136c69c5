"""The embedded engine's payloads, kept in process (docs/ARCHITECTURE.md, "Payload cache").

A search that asks the engine for 50 payloads spends about twice the CPU of the search itself
(measured on a 2,000-point shard: 0.42 against 0.18 ms), and turning them into Python objects
cost as much again. Passages repeat between searches, so EdgeStore searches for ids and scores
only and takes the payloads from here, asking the engine for the ones it does not hold.

It is exact, not a TTL cache: one process owns an embedded shard, and every write to it goes
through its EdgeStore, on the store's one thread, as do the searches that fill this cache. A
write drops the ids it touched after the engine applied it (and the whole cache if the write
failed part-way), before any later search runs. Bounded in bytes (LRU); used from the store's
thread only, so it needs no lock. The payloads it hands out are shared: readers must not
change them (the pipeline copies before it edits).
"""

from __future__ import annotations

import contextlib
import sys
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from cachetools import LRUCache

from app.clients.vectorstore.shared import DEPENDENCY
from app.errors import DependencyUnavailable
from app.types import Candidate

ENTRY_OVERHEAD = 100  # bytes of an LRU slot and its key, beyond the payload


def payload_bytes(payload: dict[str, Any]) -> int:
    """What a payload holds in memory, near enough to bound the cache: every object's own size
    (a string's in its encoding, so non-ASCII text counts in full), through nested lists and
    dicts, plus the slot's overhead."""
    return ENTRY_OVERHEAD + _deep_size(payload)


def _deep_size(value: Any) -> int:
    size = sys.getsizeof(value)
    if isinstance(value, dict):
        for k, v in value.items():
            size += sys.getsizeof(k) + _deep_size(v)
    elif isinstance(value, list | tuple):
        for v in value:
            size += _deep_size(v)
    return size


def point_key(pid: Any) -> str:
    """The id as the engine reports it: a UUID in its canonical text (the engine takes any
    spelling Python's uuid does, and an upper-case `URN:UUID:` prefix), an integer as digits."""
    if isinstance(pid, str):
        try:
            return str(uuid.UUID(pid.lower()))
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
        with contextlib.suppress(ValueError):  # cachetools' "value too large": not kept
            self._lru[key] = payload

    def candidates(
        self, found: list[Any], read: Callable[[list[Any]], Iterable[Any]]
    ) -> list[list[Candidate]]:
        """The engine's hits (pages of points with ids and scores, no payloads) as candidates,
        their payloads from here; `read(ids)` returns the engine's records of the ones missing,
        in one call, given the engine's own id objects (an integer id is read as one). Called on
        the store's thread, so no write runs between search and read."""
        # the engine's `id` builds a new uuid.UUID at every read (1 us): read once per hit
        pages = [[(str(raw), float(h.score), raw) for h in page for raw in (h.id,)] for page in found]
        payloads: dict[str, dict[str, Any]] = {}
        missing: dict[str, Any] = {}
        for page in pages:
            for pid, _, raw in page:
                p = self._lru.get(pid)
                if p is None:
                    missing[pid] = raw
                else:
                    payloads[pid] = p
        if missing:
            for r in read(list(missing.values())):
                pid, p = str(r.id), r.payload or {}
                payloads[pid] = p
                self.put(pid, p)
        out: list[list[Candidate]] = []
        for page in pages:
            row = []
            for pid, score, _ in page:
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
