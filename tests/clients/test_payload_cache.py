"""The embedded engine's payload cache (app/clients/vectorstore/payload_cache.py): bounded in
bytes, keyed as the engine reports ids, never drops a found passage, and forgets what a write
touched, on a real qdrant-edge shard. The state machine in test_search_state_machine.py checks
every hit's payload against a model over random writes, deletes and reopenings. The search
threads setting is checked here too, as the engine records it."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from app.clients.vectorstore.edge import EdgeStore
from app.clients.vectorstore.payload_cache import ENTRY_OVERHEAD, PayloadCache, payload_bytes, point_key
from app.errors import DependencyError, DependencyUnavailable
from app.settings import QdrantSettings
from app.types import PointIn, point_id

DIM = 8


def _hit(pid: str, score: float) -> Any:
    return SimpleNamespace(id=uuid.UUID(pid), score=score)


def test_bounded_in_bytes_least_recently_used_first() -> None:
    one = {"text": "x" * 600}
    cache = PayloadCache(3 * payload_bytes(one))
    ids = [str(uuid.uuid4()) for _ in range(4)]
    for pid in ids[:3]:
        cache.put(pid, dict(one))
    assert cache.get(ids[0]) is not None  # now the most recent
    cache.put(ids[3], dict(one))
    assert len(cache) == 3 and cache.bytes <= cache.max_bytes
    assert cache.get(ids[1]) is None  # the least recently used went
    assert cache.get(ids[0]) is not None and cache.get(ids[3]) is not None


def test_size_counts_non_ascii_text_and_nested_values_in_full() -> None:
    ascii_text = payload_bytes({"text": "a" * 10_000})
    assert payload_bytes({"text": "\u4e2d" * 10_000}) > 1.8 * ascii_text  # two bytes a character
    assert payload_bytes({"text": "\U0001f600" * 10_000}) > 3.5 * ascii_text  # four
    assert payload_bytes({"meta": {"body": "a" * 10_000}}) > ascii_text
    assert payload_bytes({"parts": ["a" * 100] * 100}) > ascii_text


def test_integer_ids_are_read_back_as_the_engine_gave_them() -> None:
    cache = PayloadCache(1 << 20)
    asked: list[list[Any]] = []

    def read(ids: list[Any]) -> list[Any]:
        asked.append(ids)
        return [SimpleNamespace(id=i, payload={"text": f"n{i}"}) for i in ids]

    pages = cache.candidates([[SimpleNamespace(id=42, score=0.5)]], read)
    assert asked == [[42]] and [(c.id, c.payload) for c in pages[0]] == [("42", {"text": "n42"})]


def test_a_payload_larger_than_the_cache_is_not_kept() -> None:
    cache = PayloadCache(ENTRY_OVERHEAD + 100)
    cache.put("a", {"text": "y" * 1000})
    assert len(cache) == 0


def test_drop_finds_ids_however_they_are_written() -> None:
    pid = str(uuid.uuid4())
    cache = PayloadCache(1 << 20)
    for form in (pid.upper(), uuid.UUID(pid).hex, uuid.UUID(pid), f"URN:UUID:{pid.upper()}", f"{{{pid}}}"):
        cache.put(pid, {"text": "t"})
        cache.drop([form])
        assert cache.get(pid) is None, form
    assert point_key(42) == "42" and point_key("not-a-uuid") == "not-a-uuid"


def test_candidates_reads_only_what_it_lacks_and_keeps_empty_payloads() -> None:
    cache = PayloadCache(1 << 20)
    a, b, c = (str(uuid.uuid4()) for _ in range(3))
    cache.put(a, {"text": "cached a"})
    asked: list[list[str]] = []

    def read(ids: list[Any]) -> list[Any]:  # the engine's id objects, as its hits carried them
        asked.append(sorted(str(i) for i in ids))
        return [SimpleNamespace(id=i, payload={"text": b} if str(i) == b else None) for i in ids]

    pages = cache.candidates([[_hit(a, 0.9), _hit(b, 0.8)], [_hit(c, 0.7), _hit(b, 0.6)]], read)
    assert asked == [sorted([b, c])]  # one read, each missing id once
    assert [[(x.id, x.score, x.payload) for x in page] for page in pages] == [
        [(a, 0.9, {"text": "cached a"}), (b, 0.8, {"text": b})],
        [(c, 0.7, {}), (b, 0.6, {"text": b})],
    ]
    cache.candidates([[_hit(c, 0.5)]], read)
    assert len(asked) == 1  # an empty payload is cached too


def test_a_found_point_the_engine_cannot_read_is_an_error_not_a_dropped_passage() -> None:
    cache = PayloadCache(1 << 20)
    pid = str(uuid.uuid4())
    with pytest.raises(DependencyUnavailable):
        cache.candidates([[_hit(pid, 0.5)]], lambda ids: [])


def test_eviction_while_filling_never_loses_a_hit() -> None:
    """Payloads read for the missing ids may evict ones found in the cache for the same search:
    every hit still gets its payload."""
    one = {"text": "z" * 300}
    cache = PayloadCache(2 * payload_bytes(one))
    ids = [str(uuid.uuid4()) for _ in range(4)]
    cache.put(ids[0], dict(one))
    cache.put(ids[1], dict(one))
    found = [[_hit(pid, 1.0 - i / 10) for i, pid in enumerate(ids)]]
    pages = cache.candidates(
        found, lambda missing: [SimpleNamespace(id=i, payload=dict(one)) for i in missing]
    )
    assert [x.id for x in pages[0]] == ids and all(x.payload == one for x in pages[0])


def _points(n: int, topic: str) -> list[PointIn]:
    rng = np.random.default_rng(len(topic))
    out = []
    for i in range(n):
        v = rng.normal(size=DIM).astype(np.float32)
        payload = {"tenant": "t", "doc_id": f"d{i}", "text": f"passage {i}", "topic": topic}
        out.append(PointIn(point_id("t", f"d{i}"), v / np.linalg.norm(v), payload))
    return out


def test_on_the_engine_a_write_is_seen_by_the_next_search_and_a_failed_write_empties_the_cache(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        store = EdgeStore(QdrantSettings(path=tmp_path, collection="pc"))
        await store.ensure_collection(DIM)
        first = _points(20, "old")
        await store.upsert(first)
        q = first[0].vector
        hits = await store.search(q, 20, 64, "t", {})
        assert {h.payload["topic"] for h in hits} == {"old"}
        assert len(store._payloads) == 20

        await store.upsert(_points(5, "new"))  # same ids d0..d4, a new payload
        hits = {h.id: h.payload["topic"] for h in await store.search(q, 20, 64, "t", {})}
        assert hits == {p.id: ("new" if i < 5 else "old") for i, p in enumerate(first)}

        await store.delete([first[1].id.upper()])  # the engine takes any spelling of a UUID
        hits = {h.id for h in await store.search(q, 20, 64, "t", {})}
        assert first[1].id not in hits and len(hits) == 19

        bad = [PointIn(first[2].id, np.ones(DIM + 1, np.float32), {"tenant": "t", "text": "x"})]
        with pytest.raises(DependencyError):
            await store.upsert(bad)  # the engine refuses the wrong dimension
        assert len(store._payloads) == 0
        hits = {h.id: h.payload["topic"] for h in await store.search(q, 20, 64, "t", {})}
        assert hits[first[2].id] == "new"
        await store.aclose()

    asyncio.run(main())


def test_zero_turns_it_off(tmp_path: Path) -> None:
    async def main() -> None:
        store = EdgeStore(QdrantSettings(path=tmp_path, collection="pc", payload_cache_mb=0))
        await store.ensure_collection(DIM)
        await store.upsert(_points(10, "old"))
        hits = await store.search(_points(1, "old")[0].vector, 10, 64, "t", {})
        assert len(hits) == 10 and all(h.payload["topic"] == "old" for h in hits)
        assert len(store._payloads) == 0
        await store.aclose()

    asyncio.run(main())


@pytest.mark.parametrize(("threads", "stored"), [(1, 1), (3, 3), (0, None)])
def test_search_threads_reach_the_engine(tmp_path: Path, threads: int, stored: int | None) -> None:
    """RAG_QDRANT__SEARCH_THREADS is the engine's max_search_threads (0: the engine's own pool),
    as the engine records it beside the shard."""

    async def main() -> None:
        store = EdgeStore(QdrantSettings(path=tmp_path, collection="st", search_threads=threads))
        await store.ensure_collection(DIM)
        assert store._stored_config().get("max_search_threads") == stored
        await store.aclose()

    asyncio.run(main())
