"""Helpers of the snapshot tests: keys, a gateway on a private shard, and snapshot files rewritten
the way a foreign or damaged one would look."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import re
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from support.keys import make_key
from support.net import free_port
from support.poll import poll
from support.proc import serve_app

from bench.loadgen import hey_command

ADMIN = make_key("admin-snap", "ops", admin=True)
READER = make_key("reader-snap", "default", rate_limit=1_000_000)


def repack(path: Path, **changes: Any) -> None:
    """Rewrite a snapshot file with its manifest changed, and record the new file's checksum (a
    well-formed snapshot of another collection or embedder)."""
    out = io.BytesIO()
    with tarfile.open(path, "r:gz") as src, tarfile.open(fileobj=out, mode="w:gz", compresslevel=1) as dst:
        for member in src:
            data = src.extractfile(member) if member.isfile() else None
            if member.name == "manifest.json":
                assert data is not None
                manifest = {**orjson.loads(data.read()), **changes}
                raw = orjson.dumps(manifest)
                member.size = len(raw)
                dst.addfile(member, io.BytesIO(raw))
            else:
                dst.addfile(member, data)
    path.write_bytes(out.getvalue())
    record_sum(path)


def record_sum(path: Path) -> None:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_name(path.name + ".sha256").write_text(f"{digest}  {path.name}\n")


async def points(client: httpx.AsyncClient) -> int:
    r = await client.get("/admin/collection", headers=ADMIN.headers)
    assert r.status_code == 200, r.text
    return int(r.json()["result"]["points_count"])


async def rag_ids(client: httpx.AsyncClient, q: str) -> list[str]:
    r = await client.post("/rag", json={"q": q, "k": 20, "rerank": False}, headers=READER.headers)
    assert r.status_code == 200, r.text
    return [str(x["id"]) for x in r.json()["results"]]


async def collection(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/admin/collection", headers=ADMIN.headers)
    assert r.status_code == 200, r.text
    return dict(r.json()["result"])


async def reindex(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    """Submit a reindex job and wait for it to finish; its final record."""
    r = await client.post("/jobs/reindex", json=body, headers=ADMIN.headers)
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    assert r.headers["location"] == f"/jobs/{job_id}"

    async def finished() -> dict[str, Any] | None:
        got = await client.get(f"/jobs/{job_id}", headers=ADMIN.headers)
        assert got.status_code == 200, got.text
        job: dict[str, Any] = got.json()
        return job if job["state"] in ("succeeded", "failed", "cancelled") else None

    end = asyncio.get_running_loop().time() + 120
    while (job := await finished()) is None:
        assert asyncio.get_running_loop().time() < end, "the reindex job did not finish"
        await asyncio.sleep(0.1)
    assert job["kind"] == "reindex"
    return job


def assert_json_error(r: httpx.Response, status: int, type_: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err: dict[str, Any] = r.json()["error"]
    assert err["type"] == type_
    return err


@dataclass
class Gateway:
    """A running `python -m app` process on a data directory."""

    proc: subprocess.Popen[bytes]
    url: str

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL: no shutdown code runs
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


def start_gateway(env: dict[str, str], log_path: Path) -> Gateway:
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("RAG_")}
    keys = json.dumps([k.entry() for k in (ADMIN, READER)])
    env = {**clean, "RAG_AUTH__KEYS": keys, **env}
    proc = serve_app(port, env, log_path, "/readyz", timeout_s=120, append=True)
    return Gateway(proc, f"http://127.0.0.1:{port}")


def reindex_under_hey(
    gw: Any, bodies: list[dict[str, Any]], query: str, k: int
) -> tuple[int, dict[str, str]]:
    """`hey` on the gateway's /rag for 15 s while reindex jobs of `bodies`, in turn, each after
    the last succeeded, switch the collection: (switches made, hey's response counts by status)."""
    body = json.dumps({"q": query, "k": k, "rerank": False})
    cmd = hey_command(f"{gw.url}/rag", 15, concurrency=6, body=body)
    cmd[-1:-1] = ["-H", f"Authorization: Bearer {READER.token}"]
    hey = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    switches = 0
    while hey.poll() is None:
        r = httpx.post(
            f"{gw.url}/jobs/reindex", json=bodies[switches % len(bodies)], headers=ADMIN.headers, timeout=60
        )
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]

        def done(job_id: str = job_id) -> dict[str, Any] | None:
            job = httpx.get(f"{gw.url}/jobs/{job_id}", headers=ADMIN.headers, timeout=30).json()
            return job if job["state"] not in ("queued", "running") else None

        job = poll(done, 120, interval=0.05, what="reindex finished")
        assert job["state"] == "succeeded", job
        switches += 1
    out, err = hey.communicate()
    assert hey.returncode == 0, err
    return switches, dict(re.findall(r"^\s+\[(\d{3})\]\s+(\d+) responses", out, flags=re.M))
