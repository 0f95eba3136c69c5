"""S6, queries first: S2's load on a gateway while an ingestion job runs on it, against the same
load on the same gateway with no job, and the job's passages/s under that load and alone.

Each round uploads a fresh job of JOB_PASSAGES synthetic passages (ids unique to the round, so
nothing is skipped as unchanged and every passage is embedded), measures while it runs, then
cancels it: a round never waits for 20k passages to finish. The job runs the code the bootstrap
runs (`app.ingest.ingest_documents`), so its rate alone is the bootstrap's rate on this gateway.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.corpus import generate

JOB_PASSAGES = 20_000
JOB_SEED = 6  # not the corpus seed: passages the shard does not hold
RUNNING = ("queued", "running")
BATCH_DOCS = 16  # the S6 gateway's RAG_JOBS__BATCH_DOCS


def passages(n: int = JOB_PASSAGES) -> list[dict[str, str]]:
    return generate(n=n, seed=JOB_SEED)


def job_file(workdir: Path, label: str, docs: list[dict[str, str]]) -> Path:
    """A JSON Lines upload of `docs` whose ids carry `label`."""
    path = workdir / f"s6-{label}.ndjson"
    with path.open("w") as f:
        for p in docs:
            extra = {k: v for k, v in p.items() if k not in ("id", "text")}
            f.write(json.dumps({"id": f"s6{label}-{p['id']}", "text": p["text"], **extra}) + "\n")
    return path


def _call(url: str, method: str = "GET", body: bytes | None = None) -> dict[str, Any]:
    headers = {"Content-Type": "application/x-ndjson"} if body is not None else {}
    req = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            out: dict[str, Any] = json.loads(resp.read())
            return out
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{method} {url} answered {exc.code}: {exc.read()[:500]!r}") from exc


@dataclass
class Job:
    base: str
    job_id: str

    def state(self) -> dict[str, Any]:
        return _call(f"{self.base}/jobs/{self.job_id}")

    def documents(self) -> tuple[int, float, str]:
        s = self.state()
        return int(s["documents"]), time.monotonic(), str(s["state"])

    def wait_embedding(self, timeout_s: float = 300.0) -> None:
        """Until its first batch is in: the model is loaded and the job is in its steady state."""
        end = time.monotonic() + timeout_s
        while (s := self.state())["documents"] == 0:
            if s["state"] not in RUNNING:
                raise RuntimeError(f"S6 job ended before its first batch: {s}")
            if time.monotonic() > end:
                raise TimeoutError(f"S6 job made no progress in {timeout_s:.0f}s: {s}")
            time.sleep(0.1)

    def cancel(self, timeout_s: float = 120.0) -> dict[str, Any]:
        _call(f"{self.base}/jobs/{self.job_id}", method="DELETE")
        end = time.monotonic() + timeout_s
        while (s := self.state())["state"] in RUNNING:
            if time.monotonic() > end:
                raise TimeoutError(f"S6 job not cancelled after {timeout_s:.0f}s: {s}")
            time.sleep(0.1)
        return s


def submit(base: str, path: Path, tenant: str) -> Job:
    out = _call(f"{base}/jobs/ingest?tenant={tenant}", method="POST", body=path.read_bytes())
    return Job(base, str(out["job_id"]))


def rate(before: tuple[int, float, str], after: tuple[int, float, str]) -> float:
    """Passages per second between two readings of a job."""
    return (after[0] - before[0]) / (after[1] - before[1]) if after[1] > before[1] else 0.0
