"""Snapshots and restores of a real `python -m app` process killed with SIGKILL at moments spread
over the operation: started again on the same data directory, the collection opens with the
points of before or after the operation, never a mix, every listed snapshot is whole, and nothing
half-made is left. The CLI refuses while the gateway owns the collection and works once it is
stopped; a restore survives a restart (the pointer file)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx
from snapshots_support import ADMIN, READER, Gateway, start_gateway
from support.proc import run_python

from app.clients.vectorstore.files import copy_tree
from bench.loadgen import hey_command

DOCS = [{"id": f"kill-{i}", "text": f"passage {i} about the hut below the col"} for i in range(5)]
# seconds between sending the operation and the SIGKILL: from before it starts to after it ends
DELAYS = (0.0, 0.05, 0.15, 0.3, 0.6, 1.2)


def points(gw: Gateway) -> int:
    r = httpx.get(f"{gw.url}/admin/collection", headers=ADMIN.headers, timeout=30)
    assert r.status_code == 200, r.text
    return int(r.json()["result"]["points_count"])


def write_docs(gw: Gateway) -> None:
    r = httpx.post(
        f"{gw.url}/documents",
        json={"tenant": "default", "documents": DOCS},
        headers=ADMIN.headers,
        timeout=60,
    )
    assert r.status_code == 200, r.text


def listed(gw: Gateway) -> list[dict[str, Any]]:
    r = httpx.get(f"{gw.url}/admin/snapshots", headers=ADMIN.headers, timeout=30)
    assert r.status_code == 200, r.text
    return list(r.json()["snapshots"])


def fire_and_kill(gw: Gateway, path: str, delay: float) -> None:
    """POST `path` and SIGKILL the gateway `delay` seconds later, whatever the request is doing."""

    def send() -> None:
        with contextlib.suppress(httpx.HTTPError):  # killed under it
            httpx.post(f"{gw.url}{path}", headers=ADMIN.headers, timeout=60)

    t = threading.Thread(target=send)
    t.start()
    threading.Event().wait(delay)
    gw.kill()
    t.join(70)


def assert_serves(gw: Gateway) -> None:
    r = httpx.post(
        f"{gw.url}/rag", json={"q": "hut below the col", "rerank": False}, headers=READER.headers, timeout=30
    )
    assert r.status_code == 200, r.text


def test_kill_during_snapshot_and_restore_leaves_before_or_after(
    model_dir: Path, built_collection: Path, tmp_path: Path
) -> None:
    qdrant, snaps = tmp_path / "qdrant", tmp_path / "snapshots"
    copy_tree(built_collection, qdrant)
    env = {
        "RAG_EMBEDDER__MODEL_DIR": str(model_dir),
        "RAG_QDRANT__PATH": str(qdrant),
        "RAG_SNAPSHOTS__DIR": str(snaps),
        "RAG_SNAPSHOTS__KEEP": "50",
        "RAG_REDIS__URL": "",
    }
    log = tmp_path / "gateway.log"
    gw = start_gateway(env, log)
    try:
        before = points(gw)
        r = httpx.post(f"{gw.url}/admin/snapshots", headers=ADMIN.headers, timeout=60)
        assert r.status_code == 201, r.text
        snap = r.json()["name"]
        write_docs(gw)
        after = points(gw)
        assert after == before + len(DOCS)
        for delay in DELAYS:
            fire_and_kill(gw, f"/admin/snapshots/{snap}/restore", delay)
            gw = start_gateway(env, log)
            n = points(gw)
            assert n in (before, after), (delay, n)
            assert_serves(gw)
            if n == before:
                write_docs(gw)  # back to the state after the writes for the next round
                assert points(gw) == after
            # only the serving shard and its pointer are left beside the lock file
            shards = [p.name for p in qdrant.iterdir() if p.is_dir()]
            assert len(shards) == 1, shards

            fire_and_kill(gw, "/admin/snapshots", delay)
            gw = start_gateway(env, log)
            assert points(gw) == after
            for s in listed(gw):  # a listed snapshot is whole: its checksum is its file's
                file = snaps / f"{s['name']}.tar.gz"
                assert hashlib.sha256(file.read_bytes()).hexdigest() == s["sha256"], s
            assert not [p for p in snaps.iterdir() if p.name.startswith(".")]

        # the CLI refuses while the gateway owns the collection
        cli_env = dict(env)
        out = run_python("-m", "app.snapshots", "restore", snap, **cli_env)
        assert out.returncode == 3, out.stderr
        assert "in use" in out.stderr
    finally:
        gw.stop()

    # stopped: a CLI run with another embedder than the collection's makes no snapshot the
    # gateway would refuse to restore
    out = run_python(
        "-m", "app.snapshots", "create", timeout=120, **{**cli_env, "RAG_EMBEDDER__VARIANT": "int8"}
    )
    assert out.returncode == 2 and "was embedded by" in out.stderr, out.stderr
    # the CLI makes, lists and restores snapshots; the gateway then serves the restore
    out = run_python("-m", "app.snapshots", "create", timeout=120, **cli_env)
    assert out.returncode == 0, out.stderr
    made = httpx.Response(200, content=out.stdout).json()
    assert made["points"] == after
    out = run_python("-m", "app.snapshots", "list", **cli_env)
    assert out.returncode == 0, out.stderr
    assert made["name"] in out.stdout
    out = run_python("-m", "app.snapshots", "restore", snap, timeout=120, **cli_env)
    assert out.returncode == 0, out.stderr
    out = run_python("-m", "app.snapshots", "restore", "rag_docs-20260101T000000Z-abcdef", **cli_env)
    assert out.returncode == 2 and "no such snapshot" in out.stderr
    gw = start_gateway(env, log)
    try:
        assert points(gw) == before
        assert_serves(gw)
    finally:
        gw.stop()


def test_restores_under_hey_load_answer_every_request(
    model_dir: Path, built_collection: Path, tmp_path: Path
) -> None:
    qdrant = tmp_path / "qdrant"
    copy_tree(built_collection, qdrant)
    env = {
        "RAG_EMBEDDER__MODEL_DIR": str(model_dir),
        "RAG_QDRANT__PATH": str(qdrant),
        "RAG_SNAPSHOTS__DIR": str(tmp_path / "snapshots"),
        "RAG_REDIS__URL": "",
        # two shared cores also run the restore's unpacking: the deadline is not what is tested
        "RAG_SERVER__DEADLINE_S": "20",
    }
    gw = start_gateway(env, tmp_path / "gateway.log")
    try:
        r = httpx.post(f"{gw.url}/admin/snapshots", headers=ADMIN.headers, timeout=60)
        assert r.status_code == 201, r.text
        snap = r.json()["name"]
        body = json.dumps({"q": "hut below the col", "k": 20, "rerank": False})
        cmd = hey_command(f"{gw.url}/rag", 15, concurrency=6, body=body)
        cmd[-1:-1] = ["-H", f"Authorization: Bearer {READER.token}"]
        hey = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        restores = 0
        # restore again and again for as long as the load runs (the first one starts with it)
        while hey.poll() is None:
            r = httpx.post(f"{gw.url}/admin/snapshots/{snap}/restore", headers=ADMIN.headers, timeout=120)
            assert r.status_code == 200, r.text
            restores += 1
        out, err = hey.communicate()
        assert hey.returncode == 0, err
        codes = dict(re.findall(r"^\s+\[(\d{3})\]\s+(\d+) responses", out, flags=re.M))
        assert list(codes) == ["200"], (restores, out)
    finally:
        gw.stop()
