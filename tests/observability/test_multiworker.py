"""Two uvicorn workers (`python -m app --workers 2`) in prometheus-client multiprocess mode: whichever
worker answers a scrape, /metrics counts every request of both.

Each worker has its own in-memory Qdrant (`RAG_QDRANT__URL=":memory:"`, empty), so /rag answers
503 `upstream_unavailable`; that is fine here, the requests are what is counted.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from obs_support import gateway_process, post_json, total
from prometheus_client.multiprocess import MultiProcessCollector
from support.paths import ROOT
from support.poll import poll
from support.prom import parse_samples

COUNT = "http_server_request_duration_seconds_count"


def _pids(mpdir: Path, prefix: str) -> set[int]:
    return {int(m.group(1)) for f in os.listdir(mpdir) if (m := re.match(rf"{prefix}_(\d+)\.db$", f))}


def _rag_requests_by_worker(mpdir: Path) -> dict[int, float]:
    """Each worker's own /rag count, read from its value file."""
    out = {}
    for pid in _pids(mpdir, "histogram"):
        metrics = MultiProcessCollector.merge([str(mpdir / f"histogram_{pid}.db")])
        out[pid] = sum(
            s.value for m in metrics for s in m.samples if s.name == COUNT and s.labels.get("route") == "/rag"
        )
    return out


def test_two_workers_are_counted_together(tmp_path: Path, model_dir: Path) -> None:
    mpdir = tmp_path / "prometheus-multiproc"
    mpdir.mkdir()
    stale = mpdir / "counter_999999.db"
    stale.write_bytes(b"left over from an earlier run")
    env = {
        "RAG_QDRANT__URL": ":memory:",
        "RAG_RERANKER__KIND": "none",
        "RAG_REDIS__URL": "",
        "RAG_EMBEDDER__MODEL_DIR": str(model_dir),
        "RAG_LOGGING__LEVEL": "WARNING",
        "PROMETHEUS_MULTIPROC_DIR": str(mpdir),
    }
    with gateway_process(env, tmp_path, args=("--workers", "2")) as gw:
        assert not stale.exists()  # cleaned before the workers started
        poll(lambda: len(_pids(mpdir, "gauge_livemax")) == 2, 120)  # both workers started

        # requests on fresh connections, several at once, until both workers have served some.
        # A worker's metric files appear before its lifespan has finished (the model loads
        # after them), so a worker may accept nothing for a while: all of the first 300
        # requests once went to one worker. Bounded in time and in count, not by a count that a
        # slow start can use up.
        sent = 0
        statuses: list[int] = []
        give_up = time.monotonic() + 120
        with ThreadPoolExecutor(6) as pool:
            while sent < 20_000 and time.monotonic() < give_up:
                statuses += pool.map(lambda _: post_json(gw.url + "/rag", {"q": "espresso"}), range(12))
                sent += 12
                per_worker = _rag_requests_by_worker(mpdir)
                if len(per_worker) == 2 and all(per_worker.values()):
                    break
        assert set(statuses) == {503}
        # a worker records the duration just after the response went out: give it that moment
        poll(lambda: sum(_rag_requests_by_worker(mpdir).values()) >= sent, 10)
        per_worker = _rag_requests_by_worker(mpdir)
        assert len(per_worker) == 2 and all(per_worker.values()), per_worker
        assert sum(per_worker.values()) == sent

        # whichever worker answers, every scrape sees all requests of both, once
        pages = [gw.metrics() for _ in range(8)]
        for page in pages:
            samples = parse_samples(page)
            assert total(samples, COUNT, route="/rag", status="503") == sent
            assert total(samples, "rag_requests_in_flight") == 0
            breaker = [ls for (n, ls) in samples if n == "rag_circuit_breaker_state"]
            assert breaker and all("pid" not in dict(ls) for ls in breaker)  # one series per dependency
        promtool = shutil.which("promtool")
        assert promtool
        lint = subprocess.run([promtool, "check", "metrics"], input=pages[-1], capture_output=True, text=True)
        assert lint.returncode == 0, lint.stdout + lint.stderr
        workers = _pids(mpdir, "gauge_livesum")
        assert len(workers) == 2

    # a worker that exits takes its live gauges out of the sums; its counters stay
    assert glob.glob(str(mpdir / "gauge_live*")) == []
    assert _pids(mpdir, "counter") == workers


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_killed_workers_in_flight_is_dropped_by_the_next_worker(tmp_path: Path) -> None:
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    # a worker with two requests in flight dies without a clean exit
    killed = _python(
        "import os; from app.observability.metrics import Metrics\n"
        "m = Metrics(); m.in_flight.inc(); m.in_flight.inc(); print(os.getpid(), flush=True); os._exit(9)",
        env,
    )
    pid = int(killed.stdout.strip())
    assert (tmp_path / f"gauge_livesum_{pid}.db").exists()
    # the next worker starts, handles one request and is scraped
    after = _python(
        "from app.observability.metrics import Metrics\n"
        "m = Metrics(); m.in_flight.inc(); print(m.render().decode())",
        env,
    )
    assert after.returncode == 0, after.stderr
    assert total(parse_samples(after.stdout), "rag_requests_in_flight") == 1
    assert not (tmp_path / f"gauge_livesum_{pid}.db").exists()


def test_several_workers_without_a_directory_get_a_private_one() -> None:
    code = (
        "import os; from app.observability.metrics import multiprocess_for_workers\n"
        "assert multiprocess_for_workers(1) is None\n"
        "path = multiprocess_for_workers(3)\n"
        "assert os.environ['PROMETHEUS_MULTIPROC_DIR'] == path and os.path.isdir(path)\n"
        "assert os.access(path, os.W_OK)\n"
        "print(path)"
    )
    out = _python(code, {"PROMETHEUS_MULTIPROC_DIR": ""})
    assert out.returncode == 0, out.stderr
    assert not os.path.exists(out.stdout.strip())  # removed when the supervisor exited
