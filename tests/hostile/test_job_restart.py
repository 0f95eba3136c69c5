"""A real restart: the gateway process is killed (SIGKILL) while an ingestion job runs; started
again on the same data directory, it resumes the job after its last committed batch, and every
document of the upload is there, once."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
from hostile_support import ADMIN, MALLORY, start_gateway
from support.net import free_port

from app.clients.vectorstore.files import copy_tree

DOCS = 160


def job_state(url: str, job_id: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/jobs/{job_id}", headers=ADMIN.headers, timeout=10)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_a_job_killed_mid_way_resumes_after_a_restart(
    model_dir: Path, built_collection: Path, redis_server: Any, tmp_path: Path
) -> None:
    qdrant = tmp_path / "qdrant"
    copy_tree(built_collection, qdrant)
    env = {
        "RAG_EMBEDDER__MODEL_DIR": str(model_dir),
        "RAG_QDRANT__PATH": str(qdrant),
        "RAG_REDIS__URL": "",
        "RAG_JOBS__BATCH_DOCS": "8",
    }
    lines = [
        json.dumps({"id": f"r{i}", "text": f"restart passage {i} about a mountain hut", "topic": "huts"})
        for i in range(DOCS)
    ]
    gw = start_gateway(free_port(), env, tmp_path / "first.log")
    try:
        r = httpx.post(
            f"{gw.url}/jobs/ingest?tenant=acme",
            content="\n".join(lines).encode(),
            headers={"Content-Type": "application/x-ndjson", **ADMIN.headers},
            timeout=30,
        )
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        # wait for a committed batch, then kill the process mid-job
        deadline = time.monotonic() + 120
        while True:
            state = job_state(gw.url, job_id)
            if state["lines"] >= 16:
                break
            assert time.monotonic() < deadline, state
            time.sleep(0.02)
        gw.proc.kill()
        gw.proc.wait(10)
    finally:
        gw.stop()
    assert state["state"] == "running", state  # killed before the end: 160 lines, batches of 8

    gw = start_gateway(free_port(), env, tmp_path / "second.log")
    try:
        deadline = time.monotonic() + 180
        while (out := job_state(gw.url, job_id))["state"] in ("queued", "running"):
            assert time.monotonic() < deadline, out
            time.sleep(0.05)
        assert out["state"] == "succeeded", out
        assert out["resumed"] == 1
        assert out["lines"] == DOCS
        assert out["failed_count"] == 0
        r = httpx.post(
            f"{gw.url}/rag",
            json={"q": "mountain hut", "k": 200, "rerank": False, "filter": {"topic": "huts"}},
            headers=MALLORY.headers,
            timeout=30,
        )
        assert r.status_code == 200, r.text
        ids = [h["payload"]["doc_id"] for h in r.json()["results"]]
        assert sorted(ids) == sorted(f"r{i}" for i in range(DOCS))  # all there, each once
        assert "ingest job resumed after a restart" in (tmp_path / "second.log").read_text()
    finally:
        gw.stop()
