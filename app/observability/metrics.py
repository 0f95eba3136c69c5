"""Every Prometheus metric of the gateway and their exposition, single- or multi-process. Names,
labels and buckets are a contract: docs/ARCHITECTURE.md, "Metric contract".

The registry is injectable so tests and several apps in one process never share state.
Labelled children on the hot path are cached in dicts, so a request allocates no metric object.

Multi-worker deployments (uvicorn `--workers`, gunicorn): when `PROMETHEUS_MULTIPROC_DIR` is set
before the process starts, prometheus-client keeps every value in per-process files in that
directory and `/metrics` answers with the sum over all workers (MultiProcessCollector), whichever
worker serves the scrape. Counters and histograms add up; `rag_requests_in_flight` is the sum
over live workers; `rag_circuit_breaker_state` is the worst (max) state among live workers.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client import values as _values

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
STAGES = ("embed", "search", "rerank", "cache")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# methods outside this set share one label value, so a scanner inventing methods adds no series
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
OTHER_METHOD = "_OTHER"
_LIVE_FILE = re.compile(r"^gauge_live\w+?_(\d+)\.db$")


def multiprocess_dir(env: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if env is None else env
    return env.get(MULTIPROC_ENV) or None


def prepare_multiprocess_dir(path: str) -> None:
    """Create the directory (if needed), check it is writable, and delete the value files of an
    earlier run, whose counters would otherwise be added to this one's.

    Call it once, in the process that starts the workers, before any worker exists. Only
    prometheus-client's own `*.db` files are removed.
    """
    d = Path(path)
    d.mkdir(parents=True, exist_ok=True)
    if not os.access(d, os.W_OK | os.X_OK):
        raise PermissionError(f"{MULTIPROC_ENV}={path} is not writable")
    for f in glob.glob(str(d / "*.db")):
        os.remove(f)


# snapshot operations take seconds to minutes, not the request buckets' milliseconds
SNAPSHOT_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.multiprocess_dir = multiprocess_dir()
        if self.multiprocess_dir is not None and _values.ValueClass is _values.MutexValue:
            raise RuntimeError(
                f"{MULTIPROC_ENV} was set after prometheus_client was imported; "
                "set it in the environment before the process starts"
            )
        r = self.registry
        self.http_duration = Histogram(
            "http_server_request_duration_seconds",
            "Duration of HTTP requests, by method, route template and status",
            ["method", "route", "status"],
            buckets=BUCKETS,
            registry=r,
        )
        self.cache_hit = Counter("reranker_cache_hit_total", "Rerank cache hits", registry=r)
        self.cache_miss = Counter("reranker_cache_miss_total", "Rerank cache misses", registry=r)
        self.stage_duration = Histogram(
            "rag_stage_duration_seconds",
            "Duration of one pipeline stage (embed, search, rerank, cache)",
            ["stage"],
            buckets=BUCKETS,
            registry=r,
        )
        self.degraded = Counter(
            "rag_degraded_total",
            "Answers served degraded, by failing component and reason",
            ["component", "reason"],
            registry=r,
        )
        self.retries = Counter(
            "rag_upstream_retries_total", "Retries of dependency calls", ["dependency"], registry=r
        )
        self.breaker_state = Gauge(
            "rag_circuit_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open",
            ["dependency"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.exact_fallback = Counter(
            "rag_search_exact_fallback_total",
            "Searches answered by exact search because the index answer could not be trusted: "
            "`short` (fewer hits than matching points) or `unverified_write` (the tenant's last "
            "write was not found by its own vector)",
            ["reason"],
            registry=r,
        )
        self._exact_fallback = {r: self.exact_fallback.labels(r) for r in ("short", "unverified_write")}
        self.answer_hit = Counter(
            "rag_answer_cache_hit_total", "Whole answers served from the cache", registry=r
        )
        self.answer_miss = Counter(
            "rag_answer_cache_miss_total", "Whole answers computed (not in the cache)", registry=r
        )
        self.ingest_documents = Counter(
            "rag_ingest_documents_total",
            "Documents taken in by ingestion jobs (written or skipped as unchanged)",
            registry=r,
        )
        self.ingest_jobs = Gauge(
            "rag_ingest_jobs",
            "Ingestion jobs known to this process, by state",
            ["state"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.in_flight = Gauge(
            "rag_requests_in_flight", "In-flight /rag requests", registry=r, multiprocess_mode="livesum"
        )
        self.snapshot_duration = Histogram(
            "rag_snapshot_duration_seconds",
            "Duration of one snapshot operation (create, restore, delete), by outcome (ok, error)",
            ["op", "outcome"],
            buckets=SNAPSHOT_BUCKETS,
            registry=r,
        )
        self.snapshot_newest = Gauge(
            "rag_snapshot_newest_timestamp_seconds",
            "Unix time of the newest snapshot in the snapshot directory (0: none)",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.reindex_duration = Histogram(
            "rag_reindex_duration_seconds",
            "Duration of one reindex job (op reindex or rollback), by outcome (ok, error)",
            ["op", "outcome"],
            buckets=SNAPSHOT_BUCKETS,
            registry=r,
        )
        self.reindex_last_failure = Gauge(
            "rag_reindex_last_failure_timestamp_seconds",
            "Unix time the newest failed reindex job ended, from the job records (0: none)",
            registry=r,
            multiprocess_mode="livemax",
        )
        self._stage = {s: self.stage_duration.labels(stage=s) for s in STAGES}
        self._http: dict[tuple[str, str, int], Histogram] = {}
        self._degraded: dict[tuple[str, str], Counter] = {}
        self._retries: dict[str, Counter] = {}
        self._breakers: dict[str, Gauge] = {}
        if self.multiprocess_dir is not None:
            _forget_dead_workers(self.multiprocess_dir)

    def set_jobs(self, by_state: dict[str, int]) -> None:
        for state, n in by_state.items():
            self.ingest_jobs.labels(state).set(n)

    def observe_stage(self, stage: str, seconds: float) -> None:
        self._stage[stage].observe(seconds)

    def observe_http(self, method: str, route: str, status: int, seconds: float) -> None:
        if method not in KNOWN_METHODS:
            method = OTHER_METHOD
        key = (method, route, status)
        child = self._http.get(key)
        if child is None:
            child = self._http[key] = self.http_duration.labels(method, route, str(status))
        child.observe(seconds)

    def count_degraded(self, component: str, reason: str) -> None:
        key = (component, reason)
        child = self._degraded.get(key)
        if child is None:
            child = self._degraded[key] = self.degraded.labels(component, reason)
        child.inc()

    def count_exact_fallback(self, reason: str) -> None:
        self._exact_fallback[reason].inc()

    def count_retry(self, dependency: str) -> None:
        child = self._retries.get(dependency)
        if child is None:
            child = self._retries[dependency] = self.retries.labels(dependency)
        child.inc()

    def set_breaker_state(self, dependency: str, state: int) -> None:
        child = self._breakers.get(dependency)
        if child is None:
            child = self._breakers[dependency] = self.breaker_state.labels(dependency)
        child.set(state)

    def render(self) -> bytes:
        """The text exposition for /metrics: this registry, or every worker's values summed."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    def close(self) -> None:
        """Worker exit: drop this process's live gauges (in-flight, breaker state) from the sums."""
        if self.multiprocess_dir is not None:
            multiprocess.mark_process_dead(os.getpid(), self.multiprocess_dir)  # type: ignore[no-untyped-call]


def _forget_dead_workers(path: str) -> None:
    """A worker killed without a clean exit leaves its live gauges behind; a new worker clears
    those of processes that no longer exist, so in-flight does not stay inflated forever."""
    pids = {int(m.group(1)) for name in os.listdir(path) if (m := _LIVE_FILE.match(name))}
    for pid in pids - {os.getpid()}:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            with contextlib.suppress(FileNotFoundError):
                multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
        except PermissionError:
            pass  # alive, owned by someone else


def multiprocess_for_workers(workers: int) -> str | None:
    """For the process that starts the workers (`python -m app`): prepare the multiprocess
    directory from `PROMETHEUS_MULTIPROC_DIR`, or, with several workers and no directory given,
    a private temporary one (removed at exit), so /metrics always counts every worker."""
    path = multiprocess_dir()
    if path is None and workers > 1:
        path = tempfile.mkdtemp(prefix="rag-gateway-metrics-")
        atexit.register(shutil.rmtree, path, True)
        os.environ[MULTIPROC_ENV] = path  # inherited by the workers, which import afresh
    if path is not None:
        prepare_multiprocess_dir(path)
    return path
