"""The metric contract (see docs/ARCHITECTURE.md, "Metric contract"): names, types, labels and
buckets; bounded label values under a scan of random paths and methods; no metric object
allocated per request; and promtool's lint."""

from __future__ import annotations

import asyncio
import random
import shutil
import string
import subprocess
from typing import Any

import prometheus_client.metrics
import pytest
from asgi_lifespan import LifespanManager
from obs_support import total
from prometheus_client import CollectorRegistry
from support.app import running_app
from support.net import free_port
from support.prom import parse_samples

from app.main import create_app
from app.observability.metrics import Metrics

# docs/ARCHITECTURE.md, "Metric contract", written out again on purpose: the test is the
# contract, not a copy of the code
DESIGN_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]
DESIGN = {
    "http_server_request_duration_seconds": ("histogram", {"method", "route", "status"}),
    "reranker_cache_hit": ("counter", set()),
    "reranker_cache_miss": ("counter", set()),
    "rag_stage_duration_seconds": ("histogram", {"stage"}),
    "rag_degraded": ("counter", {"component", "reason"}),
    "rag_upstream_retries": ("counter", {"dependency"}),
    "rag_circuit_breaker_state": ("gauge", {"dependency"}),
    "rag_requests_in_flight": ("gauge", set()),
    "rag_search_exact_fallback": ("counter", {"reason"}),
    "rag_ingest_documents": ("counter", set()),
    "rag_answer_cache_hit": ("counter", set()),
    "rag_answer_cache_miss": ("counter", set()),
    "rag_ingest_jobs": ("gauge", {"state"}),
    "rag_snapshot_duration_seconds": ("histogram", {"op", "outcome"}),
    "rag_snapshot_newest_timestamp_seconds": ("gauge", set()),
    "rag_reindex_duration_seconds": ("histogram", {"op", "outcome"}),
    "rag_reindex_last_failure_timestamp_seconds": ("gauge", set()),
}


def test_names_types_labels_and_buckets_are_the_design_contract() -> None:
    m = Metrics(CollectorRegistry())
    m.observe_http("POST", "/rag", 200, 0.003)
    for stage in ("embed", "search", "rerank", "cache"):
        m.observe_stage(stage, 0.002)
    m.count_degraded("reranker", "timeout")
    m.count_retry("qdrant")
    m.set_breaker_state("reranker", 2)
    m.set_jobs({"queued": 1, "running": 0})
    m.snapshot_duration.labels("create", "ok").observe(1.5)
    m.reindex_duration.labels("reindex", "ok").observe(2.5)
    families = {f.name: f for f in m.registry.collect()}
    assert set(families) == set(DESIGN)
    for name, (kind, labels) in DESIGN.items():
        fam = families[name]
        assert fam.type == kind, name
        for s in fam.samples:
            if s.name.endswith("_created"):
                continue
            assert set(s.labels) - {"le"} == labels, (name, s)
    for name in ("http_server_request_duration_seconds", "rag_stage_duration_seconds"):
        les = sorted({float(s.labels["le"]) for s in families[name].samples if s.name.endswith("_bucket")})
        assert les == [*DESIGN_BUCKETS, float("inf")], name
    stages = {s.labels["stage"] for s in families["rag_stage_duration_seconds"].samples}
    assert stages == {"embed", "search", "rerank", "cache"}
    text = m.render().decode()
    assert 'rag_circuit_breaker_state{dependency="reranker"} 2.0' in text
    assert 'rag_degraded_total{component="reranker",reason="timeout"} 1.0' in text
    assert "rag_upstream_retries_total" in text and "reranker_cache_hit_total 0.0" in text


async def test_hot_path_allocates_no_metric_objects(
    settings_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the first request of each kind, serving requests never calls `.labels()` (the
    lookup that finds or creates a labelled child): the children are cached."""
    # a loaded machine must not turn a slow Redis answer into a bypass (no hit to count)
    redis = {"timeout_s": 2.0, "connect_timeout_s": 2.0}
    async with running_app(settings_factory(redis=redis)) as (client, app):
        metrics: Metrics = app.state.rag.metrics

        async def one_of_each() -> None:
            assert (await client.post("/rag", json={"q": "espresso grind", "k": 10})).status_code == 200
            # the cache write runs in the background: wait for it, so the next /rag is a hit
            await app.state.rag.pipeline.drain()
            assert (await client.get("/no/such/path")).status_code == 404
            assert (await client.get("/livez")).status_code == 200
            assert (await client.request("BREW", "/rag")).status_code == 405

        await one_of_each()
        children = len(metrics.http_duration._metrics)

        def forbidden(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("labels() called on the hot path")

        monkeypatch.setattr(prometheus_client.metrics.MetricWrapperBase, "labels", forbidden)
        before = parse_samples(metrics.render().decode())
        for _ in range(3):
            await one_of_each()
        after = parse_samples(metrics.render().decode())
        monkeypatch.undo()
        assert len(metrics.http_duration._metrics) == children
        count = "http_server_request_duration_seconds_count"
        assert total(after, count) - total(before, count) == 12
        assert total(after, "reranker_cache_hit_total") - total(before, "reranker_cache_hit_total") == 3
        assert total(after, count, method="_OTHER", route="/rag", status="405") >= 4


def _random_path(rng: random.Random) -> str:
    alphabet = string.ascii_letters + string.digits + "-._~%!$&'()*+,;=:@"
    segments = ["".join(rng.choices(alphabet, k=rng.randint(1, 24))) for _ in range(rng.randint(1, 6))]
    return "/" + "/".join(segments)


JUNK_METHODS = ["BREW", "PROPFIND", "get", "X" * 40, "M-SEARCH", "PURGE"]
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", *JUNK_METHODS]


async def test_ten_thousand_random_paths_add_no_series(settings_factory: Any) -> None:
    """Unknown paths share the route label `unmatched` and unknown methods `_OTHER`: once every
    (method kind, outcome) has been seen, 10,000 random requests add no series at all."""
    rng = random.Random(4)
    app = create_app(settings_factory())
    async with LifespanManager(app, startup_timeout=60) as manager:
        metrics: Metrics = app.state.rag.metrics

        async def call(method: str, path: str) -> int:
            status = 0

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": b"", "more_body": False}

            async def send(message: dict[str, Any]) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]

            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": method,
                "scheme": "http",
                "path": path,
                "raw_path": path.encode(),
                "root_path": "",
                "query_string": b"",
                "headers": [(b"host", b"gateway")],
                "client": ("127.0.0.1", 1234),
                "server": ("gateway", 80),
            }
            await manager.app(scope, receive, send)
            return status

        def series() -> set[tuple[str, frozenset[tuple[str, str]]]]:
            return {k for k in parse_samples(metrics.render().decode()) if k[0].startswith("http_server")}

        # one of each kind first: a random path (404), a probe with a trailing slash (redirect)
        for method in METHODS:
            assert await call(method, _random_path(rng)) == 404
            assert await call(method, "/livez/") == 307
            assert await call(method, "/readyz/") == 307
        warm = series()

        statuses = []
        for _ in range(10_000):
            method = rng.choice(METHODS)
            path = _random_path(rng) if rng.random() < 0.98 else rng.choice(["/livez/", "/readyz/"])
            statuses.append(await call(method, path))
        assert series() == warm
        routes = {dict(labels)["route"] for _, labels in warm if "route" in dict(labels)}
        methods = {dict(labels)["method"] for _, labels in warm if "method" in dict(labels)}
        assert routes == {"unmatched"}
        assert methods == {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "_OTHER"}
        assert statuses.count(404) > 9_000
        count = parse_samples(metrics.render().decode())
        assert total(count, "http_server_request_duration_seconds_count", route="unmatched") >= 10_000


async def test_promtool_accepts_the_exposition(settings_factory: Any) -> None:
    """`promtool check metrics` on /metrics after traffic that touched every metric: a reranker
    that refuses connections (degraded, retried, breaker open) and a cache hit and miss."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed: `make test` installs it (Debian package prometheus)"
    settings = settings_factory(
        reranker={"kind": "http", "url": f"http://127.0.0.1:{free_port()}", "timeout_s": 0.2},
        resilience={"breaker_window": 4, "breaker_min_calls": 2, "retry_base_s": 0.001, "retry_cap_s": 0.002},
    )
    async with running_app(settings) as (client, _):
        for q in ("espresso", "espresso", "sourdough starter", "first aid for burns"):
            assert (await client.post("/rag", json={"q": q, "k": 5})).status_code == 200
        r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = r.text
    samples = parse_samples(text)
    assert total(samples, "rag_degraded_total", component="reranker") >= 1
    assert total(samples, "rag_upstream_retries_total", dependency="reranker") >= 1
    assert total(samples, "rag_circuit_breaker_state", dependency="reranker") == 2
    out = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == "" and out.stderr.strip() == "", out.stdout + out.stderr


async def test_breaker_gauge_shows_half_open_at_scrape_time_without_traffic(settings_factory: Any) -> None:
    """OPEN turns HALF_OPEN when the wait is over; a scrape must show it even if no request
    has asked the breaker since (an alert on `== 2` must stop firing)."""
    settings = settings_factory(
        reranker={"kind": "http", "url": f"http://127.0.0.1:{free_port()}", "timeout_s": 0.2},
        resilience={
            "breaker_window": 4,
            "breaker_min_calls": 2,
            "breaker_open_s": 0.3,
            "retry_attempts": 0,
        },
    )
    async with running_app(settings) as (client, _):
        for q in ("espresso", "sourdough starter"):
            assert (await client.post("/rag", json={"q": q, "k": 5})).status_code == 200
        opened = parse_samples((await client.get("/metrics")).text)
        assert total(opened, "rag_circuit_breaker_state", dependency="reranker") == 2
        await asyncio.sleep(0.4)
        later = parse_samples((await client.get("/metrics")).text)
        assert total(later, "rag_circuit_breaker_state", dependency="reranker") == 1
