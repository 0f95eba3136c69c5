"""Snapshots over HTTP on the embedded engine: create, list, delete and retention; a restore
serves the snapshot's data without a restart (answer cache included); every refused snapshot
(corrupt, truncated, foreign, other embedder, no checksum, bad name) leaves the serving data as
it was; admin keys only; /rag requests running across a restore all answer 200."""

from __future__ import annotations

import asyncio
import io
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from snapshots_support import ADMIN, READER, assert_json_error, points, rag_ids, record_sum, repack
from support.app import make_settings, running_app

NEW_DOC = {
    "id": "snap-new",
    "text": "a glacier lake below the northern ridge of the massif",
    "topic": "lakes",
}
QUERY = "glacier lake below the northern ridge"


@pytest.fixture
async def gateway(
    model_dir: Path, qdrant_path: Path, redis_url: str, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, Path]]:
    snaps = tmp_path / "snaps"
    settings = make_settings(
        model_dir,
        qdrant_path,
        redis_url,
        auth={"keys": [ADMIN.entry(), READER.entry()]},
        snapshots={"dir": snaps, "keep": 2},
        answer_cache={"enabled": True},
    )
    async with running_app(settings) as (c, _):
        yield c, snaps


async def create(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.post("/admin/snapshots", headers=ADMIN.headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def listed(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    r = await client.get("/admin/snapshots", headers=ADMIN.headers)
    assert r.status_code == 200, r.text
    return list(r.json()["snapshots"])


async def test_create_list_delete_and_retention(gateway: tuple[httpx.AsyncClient, Path]) -> None:
    client, snaps = gateway
    n = await points(client)
    first = await create(client)
    assert set(first) == {"name", "created_at", "points", "size_bytes", "sha256"}
    assert first["points"] == n
    file = snaps / f"{first['name']}.tar.gz"
    assert file.stat().st_size == first["size_bytes"]
    # the engine's sparse files pack into little: far below the shard's apparent length
    assert first["size_bytes"] < 20 * 1024 * 1024
    assert (snaps / f"{first['name']}.tar.gz.sha256").read_text().split()[0] == first["sha256"]
    assert [s["name"] for s in await listed(client)] == [first["name"]]

    second, third = await create(client), await create(client)
    # keep=2: the oldest went when the third was made
    assert [s["name"] for s in await listed(client)] == [third["name"], second["name"]]
    assert not file.exists()
    assert sorted(p.name for p in snaps.iterdir()) == sorted(
        f"{s['name']}{ext}" for s in (second, third) for ext in (".tar.gz", ".tar.gz.sha256")
    )

    r = await client.delete(f"/admin/snapshots/{second['name']}", headers=ADMIN.headers)
    assert r.status_code == 200, r.text
    assert [s["name"] for s in await listed(client)] == [third["name"]]
    assert_json_error(
        await client.delete(f"/admin/snapshots/{second['name']}", headers=ADMIN.headers), 404, "not_found"
    )
    # not a name of ours: 404; not a name at all (a leading dot, `..`, a space): 422
    for bad, status, type_ in (
        ("x", 404, "not_found"),
        (f"{third['name']}.tar.gz", 404, "not_found"),
        ("rag_docs-20260101T000000Z-zzzzzz", 404, "not_found"),
        (".work-x", 422, "invalid_request"),
        ("a..b", 422, "invalid_request"),
        ("a%20b", 422, "invalid_request"),
    ):
        assert_json_error(
            await client.delete(f"/admin/snapshots/{bad}", headers=ADMIN.headers), status, type_
        )
        assert_json_error(
            await client.post(f"/admin/snapshots/{bad}/restore", headers=ADMIN.headers), status, type_
        )
    # an encoded slash never reaches the handler: no route has it
    r = await client.delete("/admin/snapshots/..%2F..%2Fetc%2Fpasswd", headers=ADMIN.headers)
    assert_json_error(r, 404, "not_found")
    assert [s["name"] for s in await listed(client)] == [third["name"]]


async def test_only_admin_keys(gateway: tuple[httpx.AsyncClient, Path]) -> None:
    client, _ = gateway
    name = "rag_docs-20260101T000000Z-abcdef"
    for method, path in (
        ("POST", "/admin/snapshots"),
        ("GET", "/admin/snapshots"),
        ("DELETE", f"/admin/snapshots/{name}"),
        ("POST", f"/admin/snapshots/{name}/restore"),
    ):
        assert_json_error(await client.request(method, path, headers=READER.headers), 403, "forbidden")
        assert_json_error(await client.request(method, path), 401, "unauthorized")
    assert await listed(client) == []


async def test_restore_serves_the_snapshots_data(
    gateway: tuple[httpx.AsyncClient, Path], qdrant_path: Path
) -> None:
    client, _ = gateway
    before = await points(client)
    snap = await create(client)
    r = await client.post(
        "/documents", json={"tenant": "default", "documents": [NEW_DOC]}, headers=ADMIN.headers
    )
    assert r.status_code == 200, r.text
    assert await points(client) == before + 1
    assert "snap-new" in [i.split(":")[-1] for i in await rag_ids(client, QUERY)] or await rag_ids(
        client, QUERY
    )
    found = await client.post("/rag", json={"q": QUERY, "k": 20, "rerank": False}, headers=READER.headers)
    assert any(
        x.get("doc_id") == "snap-new" or "glacier lake" in x.get("text", "") for x in found.json()["results"]
    )

    r = await client.post(f"/admin/snapshots/{snap['name']}/restore", headers=ADMIN.headers)
    assert r.status_code == 200, r.text
    assert r.json()["restored"]["name"] == snap["name"]
    assert await points(client) == before
    # the pointer names the restored shard, the only one left; its sparse files stayed sparse
    serving = qdrant_path / (qdrant_path / "rag_docs.current").read_text().strip()
    assert [p.name for p in qdrant_path.iterdir() if p.is_dir()] == [serving.name]
    files = [p.stat() for p in serving.rglob("*") if p.is_file()]
    length, on_disk = sum(f.st_size for f in files), sum(f.st_blocks * 512 for f in files)
    assert on_disk * 4 < length, (on_disk, length)
    # the same query again: not the cached answer from before the restore
    again = await client.post("/rag", json={"q": QUERY, "k": 20, "rerank": False}, headers=READER.headers)
    assert again.status_code == 200, again.text
    assert again.headers["x-answer-cache"] == "miss"
    assert not any("glacier lake" in x.get("text", "") for x in again.json()["results"])
    # writes go on into the restored collection
    r = await client.post(
        "/documents", json={"tenant": "default", "documents": [NEW_DOC]}, headers=ADMIN.headers
    )
    assert r.status_code == 200, r.text
    assert await points(client) == before + 1


def _corrupt(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))


def _truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


def _truncate_with_sum(file: Path) -> None:
    _truncate(file)
    record_sum(file)


def _no_sum(file: Path) -> None:
    file.with_name(file.name + ".sha256").unlink()


def _not_a_snapshot(file: Path) -> None:
    file.write_bytes(b"\x1f\x8b not really a gzip stream")
    record_sum(file)


def _shard_records_another_embedder(file: Path) -> None:
    """A well-formed snapshot whose manifest names our embedder but whose shard records another."""
    out = io.BytesIO()
    with tarfile.open(file, "r:gz") as src, tarfile.open(fileobj=out, mode="w:gz", compresslevel=1) as dst:
        names = []
        for member in src:
            names.append(member.name)
            data = src.extractfile(member) if member.isfile() else None
            if member.name == "shard/gateway.json":
                raw = orjson.dumps({"embedder": "another-model@1"})
                member.size = len(raw)
                dst.addfile(member, io.BytesIO(raw))
            else:
                dst.addfile(member, data)
    assert "shard/gateway.json" in names
    file.write_bytes(out.getvalue())
    record_sum(file)


REFUSALS = [
    (_corrupt, 422, "snapshot_invalid"),
    (_truncate, 422, "snapshot_invalid"),
    (_truncate_with_sum, 422, "snapshot_invalid"),
    (_no_sum, 422, "snapshot_invalid"),
    (_not_a_snapshot, 422, "snapshot_invalid"),
    (lambda f: repack(f, format=99), 422, "snapshot_invalid"),
    (lambda f: repack(f, collection="other_docs"), 409, "conflict"),
    (lambda f: repack(f, embedder_id="another-model@1"), 409, "conflict"),
    (lambda f: repack(f, embedder_dim=768), 409, "conflict"),
    (lambda f: repack(f, points=1), 422, "snapshot_invalid"),
    (lambda f: repack(f, padding="x" * 70_000), 422, "snapshot_invalid"),  # a manifest bomb
    (_shard_records_another_embedder, 409, "conflict"),
]


async def test_refused_snapshots_leave_the_serving_data(
    gateway: tuple[httpx.AsyncClient, Path], qdrant_path: Path
) -> None:
    client, snaps = gateway
    snap = await create(client)
    file = snaps / f"{snap['name']}.tar.gz"
    pristine = file.read_bytes(), (snaps / f"{snap['name']}.tar.gz.sha256").read_bytes()
    r = await client.post(
        "/documents", json={"tenant": "default", "documents": [NEW_DOC]}, headers=ADMIN.headers
    )
    assert r.status_code == 200, r.text
    serving = await points(client)
    shard_dirs = sorted(p.name for p in qdrant_path.iterdir())
    for damage, status, type_ in REFUSALS:
        file.write_bytes(pristine[0])
        file.with_name(file.name + ".sha256").write_bytes(pristine[1])
        damage(file)
        err = assert_json_error(
            await client.post(f"/admin/snapshots/{snap['name']}/restore", headers=ADMIN.headers),
            status,
            type_,
        )
        assert "Traceback" not in err["message"]
        assert await points(client) == serving
        assert sorted(p.name for p in qdrant_path.iterdir()) == shard_dirs
        ids = await rag_ids(client, QUERY)
        assert ids
    # the untouched file still restores
    file.write_bytes(pristine[0])
    file.with_name(file.name + ".sha256").write_bytes(pristine[1])
    r = await client.post(f"/admin/snapshots/{snap['name']}/restore", headers=ADMIN.headers)
    assert r.status_code == 200, r.text
    assert await points(client) == serving - 1


async def test_rag_requests_across_a_restore_all_answer(gateway: tuple[httpx.AsyncClient, Path]) -> None:
    client, _ = gateway
    snap = await create(client)
    statuses: list[int] = []
    restored = asyncio.Event()

    async def asker(i: int) -> None:
        n = 0
        while not restored.is_set() or n < 3:
            r = await client.post(
                "/rag", json={"q": f"mountain pass {i} {n}", "k": 10, "rerank": False}, headers=READER.headers
            )
            statuses.append(r.status_code)
            n += 1

    async def restorer() -> None:
        try:
            for _ in range(3):
                r = await client.post(f"/admin/snapshots/{snap['name']}/restore", headers=ADMIN.headers)
                assert r.status_code == 200, r.text
        finally:
            restored.set()

    await asyncio.gather(restorer(), *(asker(i) for i in range(6)))
    assert len(statuses) >= 18
    assert set(statuses) == {200}


async def test_a_restore_waits_for_ingestion_jobs(gateway: tuple[httpx.AsyncClient, Path]) -> None:
    """A job's batches before a restore would vanish and its later ones land in the restored
    data, while it reports them written: the restore is refused until no job is unfinished."""
    client, _ = gateway
    snap = await create(client)
    lines = [
        orjson.dumps({"id": f"job-doc-{i}", "text": f"passage {i} about alpine passes, the weather on them"})
        for i in range(400)
    ]
    r = await client.post(
        "/jobs/ingest?tenant=default",
        content=b"\n".join(lines) + b"\n",
        headers={**ADMIN.headers, "Content-Type": "application/x-ndjson"},
    )
    assert r.status_code == 202, r.text
    job = r.json()["job_id"]
    err = assert_json_error(
        await client.post(f"/admin/snapshots/{snap['name']}/restore", headers=ADMIN.headers), 409, "conflict"
    )
    assert "ingestion job" in err["message"]
    r = await client.delete(f"/jobs/{job}", headers=ADMIN.headers)
    assert r.status_code in (200, 202), r.text
    for _ in range(600):
        state = (await client.get(f"/jobs/{job}", headers=ADMIN.headers)).json()["state"]
        if state in ("succeeded", "failed", "cancelled"):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the cancelled job never finished")
    r = await client.post(f"/admin/snapshots/{snap['name']}/restore", headers=ADMIN.headers)
    assert r.status_code == 200, r.text
