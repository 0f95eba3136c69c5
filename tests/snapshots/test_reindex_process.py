"""Reindexes of a real `python -m app` process: killed with SIGKILL at moments spread over the job,
then started again on the same data directory, the collection serves the shard of before or after
the reindex (its HNSW `m`, all its points), never a mix; the job is failed with its reason, or
ran to its end; only the serving shard and the one kept for a rollback are left. Under `hey` load
every `/rag` request across the switches answers 200."""

from __future__ import annotations

import contextlib
import re
import threading
from pathlib import Path
from typing import Any

import httpx
from snapshots_support import ADMIN, READER, Gateway, reindex_under_hey, start_gateway
from support.poll import poll

from app.clients.vectorstore.files import copy_tree

# seconds between sending the reindex and the SIGKILL: from before it starts to after it ends
DELAYS = (0.0, 0.1, 0.3, 0.5, 0.7, 1.0, 2.0)


def collection(gw: Gateway) -> dict[str, Any]:
    r = httpx.get(f"{gw.url}/admin/collection", headers=ADMIN.headers, timeout=30)
    assert r.status_code == 200, r.text
    return dict(r.json()["result"])


def jobs(gw: Gateway) -> list[dict[str, Any]]:
    r = httpx.get(f"{gw.url}/jobs", headers=ADMIN.headers, timeout=30)
    assert r.status_code == 200, r.text
    return list(r.json()["jobs"])


def all_finished(gw: Gateway) -> tuple[list[dict[str, Any]]] | None:
    """(every job,) once none is queued or running (a tuple: no job at all is finished too)."""
    listed = jobs(gw)
    return (listed,) if all(j["state"] in ("succeeded", "failed", "cancelled") for j in listed) else None


def fire_and_kill(gw: Gateway, body: dict[str, Any], delay: float) -> None:
    def send() -> None:
        with contextlib.suppress(httpx.HTTPError):  # killed under it
            httpx.post(f"{gw.url}/jobs/reindex", json=body, headers=ADMIN.headers, timeout=60)

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


def test_kill_during_reindex_leaves_before_or_after(
    model_dir: Path, built_collection: Path, tmp_path: Path
) -> None:
    qdrant = tmp_path / "qdrant"
    copy_tree(built_collection, qdrant)
    env = {
        "RAG_EMBEDDER__MODEL_DIR": str(model_dir),
        "RAG_QDRANT__PATH": str(qdrant),
        "RAG_JOBS__DIR": str(tmp_path / "jobs"),
        "RAG_REDIS__URL": "",
    }
    log = tmp_path / "gateway.log"
    gw = start_gateway(env, log)
    try:
        n = collection(gw)["points_count"]
        outcomes: list[tuple[float, str]] = []
        for delay in DELAYS:
            m = collection(gw)["config"]["hnsw_config"]["m"]
            wanted = 16 if m != 16 else 24
            fire_and_kill(gw, {"hnsw": {"m": wanted}}, delay)
            gw = start_gateway(env, log)
            info = collection(gw)
            assert info["points_count"] == n, (delay, info)
            assert info["config"]["hnsw_config"]["m"] in (m, wanted), (delay, info)
            assert_serves(gw)
            # a job killed while it ran is failed with its reason; a queued one runs now
            (listed,) = poll(lambda gw=gw: all_finished(gw), 120, what="every job finished")
            for job in listed:
                assert job["state"] in ("succeeded", "failed"), job
                if job["state"] == "failed":
                    assert "stopped while the job ran" in job["error"], job
            if listed and listed[0]["params"] == {"hnsw": {"m": wanted}}:
                outcomes.append((delay, listed[0]["state"]))
            m_now = collection(gw)["config"]["hnsw_config"]["m"]
            assert m_now in (m, wanted)
            # the serving shard, and at most the one kept for a rollback
            shards = {p.name for p in qdrant.iterdir() if p.is_dir()}
            named = {
                (qdrant / f"rag_docs{s}").read_text().strip()
                for s in (".current", ".previous")
                if (qdrant / f"rag_docs{s}").exists()
            }
            assert shards <= named | {"rag_docs"} and len(shards) <= 2, (shards, named)
        # the kills met jobs at different moments: at least one was cut short
        assert any(state == "failed" for _, state in outcomes), outcomes
        # the failure alert's gauge comes from the job records: a restart does not hide it
        failed = [j["finished_at"] for j in jobs(gw) if j["state"] == "failed"]
        metrics = httpx.get(f"{gw.url}/metrics", timeout=30).text
        gauge = re.search(r"^rag_reindex_last_failure_timestamp_seconds (\S+)$", metrics, flags=re.M)
        assert gauge is not None and float(gauge[1]) == max(failed), metrics[-2000:]
    finally:
        gw.stop()


def test_reindexes_under_hey_load_answer_every_request(
    model_dir: Path, built_collection: Path, tmp_path: Path
) -> None:
    qdrant = tmp_path / "qdrant"
    copy_tree(built_collection, qdrant)
    env = {
        "RAG_EMBEDDER__MODEL_DIR": str(model_dir),
        "RAG_QDRANT__PATH": str(qdrant),
        "RAG_JOBS__DIR": str(tmp_path / "jobs"),
        "RAG_REDIS__URL": "",
        # two shared cores also run the reindex's build: the deadline is not what is tested
        "RAG_SERVER__DEADLINE_S": "20",
    }
    gw = start_gateway(env, tmp_path / "gateway.log")
    try:
        # reindex again and again (and roll back) for as long as the load runs
        bodies = [{"hnsw": {"m": 16}}, {"rollback": True}, {"hnsw": {"ef_construct": 64}}]
        switches, codes = reindex_under_hey(gw, bodies, "hut below the col", 20)
        assert switches >= 2, switches
        assert list(codes) == ["200"], (switches, codes)
    finally:
        gw.stop()
