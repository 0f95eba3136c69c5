"""Write verification (app/search.py) against an index that loses points on purpose: a lost
point marks its tenant, the tenant is searched exactly (and counted) until a later check finds
it, marks change point by point so concurrent writes and deletes cannot erase or resurrect each
other's, and a deleted point is never "lost"."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from support.store import DefectiveIndex

from app.clients.vectorstore import EdgeStore
from app.search import complete_search, forget_points, integrity_of, verify_writes
from app.settings import QdrantSettings
from app.types import PointIn, point_id

DIM = 16


def points(tenant: str, n: int, seed: int) -> list[PointIn]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        v = rng.normal(size=DIM)
        out.append(
            PointIn(
                point_id(tenant, f"{seed}-{i}"),
                (v / np.linalg.norm(v)).astype(np.float32),
                {"tenant": tenant},
            )
        )
    return out


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[DefectiveIndex]:
    """The real embedded store, except that its index cannot see the points in `lost`."""
    inner = EdgeStore(QdrantSettings(path=tmp_path, collection="wv"))
    await inner.ensure_collection(DIM)
    lossy = DefectiveIndex(inner)
    try:
        yield lossy
    finally:
        await inner.aclose()


async def write(store: Any, pts: list[PointIn]) -> dict[str, int]:
    await store.upsert(pts)
    await store.optimize()
    by_tenant: dict[str, dict[str, npt.NDArray[np.float32]]] = {}
    for p in pts:
        by_tenant.setdefault(p.payload["tenant"], {})[p.id] = p.vector
    missed: dict[str, int] = await verify_writes(store, by_tenant)
    return missed


async def test_a_lost_point_makes_its_tenant_exact_until_found(store: DefectiveIndex) -> None:
    acme, globex = points("acme", 20, 1), points("globex", 20, 2)
    assert await write(store, acme + globex) == {}
    more = points("acme", 5, 3)
    store.lost = {more[1].id}
    assert await write(store, more) == {"acme": 1}
    assert set(integrity_of(store).unverified) == {"acme"}

    reasons: list[str] = []
    hits = await complete_search(store, more[1].vector, 1, 64, "acme", {}, on_fallback=reasons.append)
    assert hits[0].id == more[1].id and reasons == ["unverified_write"]
    # other tenants keep the index
    before = store.exact_searches
    await complete_search(store, globex[0].vector, 1, 64, "globex", {}, on_fallback=reasons.append)
    assert store.exact_searches == before and reasons == ["unverified_write"]

    store.lost = set()
    assert await write(store, points("globex", 2, 4)) == {}  # any later check looks again
    assert integrity_of(store).unverified == {}
    hits = await complete_search(store, more[1].vector, 1, 64, "acme", {}, on_fallback=reasons.append)
    assert hits[0].id == more[1].id and reasons == ["unverified_write"]  # the index again


async def test_a_short_index_answer_is_served_exactly_and_counted(store: DefectiveIndex) -> None:
    acme = points("acme", 10, 5)
    await write(store, acme)
    store.lost = {acme[0].id, acme[1].id}
    reasons: list[str] = []
    hits = await complete_search(store, acme[0].vector, 20, 64, "acme", {}, on_fallback=reasons.append)
    assert len(hits) == 10 and hits[0].id == acme[0].id and reasons == ["short"]


async def test_concurrent_writes_do_not_erase_each_others_marks(store: DefectiveIndex) -> None:
    a, b = points("acme", 8, 6), points("acme", 8, 7)
    store.lost = {a[2].id}
    await asyncio.gather(write(store, a), write(store, b))
    assert set(integrity_of(store).unverified["acme"]) == {a[2].id}
    # and across tenants: a write of another tenant re-checks acme's mark without dropping it
    await write(store, points("globex", 3, 8))
    assert set(integrity_of(store).unverified["acme"]) == {a[2].id}


async def test_a_deleted_point_is_gone_not_lost(store: DefectiveIndex) -> None:
    a = points("acme", 6, 9)
    store.lost = {a[0].id, a[1].id}
    await write(store, a)
    assert set(integrity_of(store).unverified["acme"]) == {a[0].id, a[1].id}
    # a delete racing a check: the check must not put the deleted point back
    await store.delete([a[0].id])
    check = asyncio.ensure_future(write(store, points("acme", 2, 10)))
    await forget_points(store, "acme", [a[0].id])
    await check
    assert set(integrity_of(store).unverified["acme"]) == {a[1].id}
    await store.delete([a[1].id])  # deleted without telling the integrity state
    await write(store, points("acme", 1, 11))
    assert integrity_of(store).unverified == {}
