"""The dashboards' queries, answered by a real Prometheus scraping the real gateway under load.

The gateway runs as `python -m app` (uvicorn) on the test collection and a real Redis; Prometheus
scrapes it every second; `hey` drives one repeated query. Then the p95/p99 and hit-rate
queries run through Prometheus's HTTP API and are held against what the client measured and
against the gateway's own counters read before and after the load.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from obs_support import (
    bucket_of,
    buckets,
    gateway_process,
    histogram_quantile,
    post_json,
    prometheus_server,
    run_hey,
    total,
)
from support.poll import poll
from support.prom import parse_samples

DESIGN_P95 = "histogram_quantile(0.95, sum(rate(http_server_request_duration_seconds_bucket[5m])) by (le))"
DESIGN_P99 = "histogram_quantile(0.99, sum(rate(http_server_request_duration_seconds_bucket[5m])) by (le))"
RAG_P95 = 'histogram_quantile(0.95, sum(rate(http_server_request_duration_seconds_bucket{route="/rag"}[5m])) by (le))'
HIT_RATE = (
    "sum(rate(reranker_cache_hit_total[5m]))"
    " / (sum(rate(reranker_cache_hit_total[5m])) + sum(rate(reranker_cache_miss_total[5m])))"
)
CONCURRENCY = 10


def test_prometheus_quantiles_and_hit_rate_match_the_client(
    tmp_path: Path, qdrant_path: Path, model_dir: Path, redis_url: str
) -> None:
    env = {
        "RAG_QDRANT__PATH": str(qdrant_path),
        "RAG_EMBEDDER__MODEL_DIR": str(model_dir),
        "RAG_REDIS__URL": redis_url,
        # generous: on a busy machine the 50 ms default turns some lookups into bypasses, which
        # count as neither hit nor miss; this test is about counting, not Redis stalls
        "RAG_REDIS__TIMEOUT_S": "2",
        "RAG_LOGGING__LEVEL": "WARNING",
        # every request reaches the rerank cache, whose hit rate the dashboard plots (with the
        # answer cache on, repeats are answered whole before it)
        "RAG_ANSWER_CACHE__ENABLED": "false",
    }
    with gateway_process(env, tmp_path) as gw:
        # a different query first, so the /rag series exist before Prometheus's first scrape
        assert post_json(gw.url + "/rag", {"q": "warm up", "k": 50}) == 200
        (tmp_path / "prom").mkdir()
        with prometheus_server(f"127.0.0.1:{gw.port}", tmp_path / "prom") as prom:
            poll(prom.targets_up, 30)
            poll(lambda: prom.query('http_server_request_duration_seconds_count{route="/rag"}'), 30)
            before = parse_samples(gw.metrics())

            hey = run_hey(gw.url + "/rag", '{"q":"test","k":50}', duration_s=8, concurrency=CONCURRENCY)

            # requests hey abandoned at the end are still being cancelled: wait until none is left
            poll(lambda: total(parse_samples(gw.metrics()), "rag_requests_in_flight") == 0, 15)
            after = parse_samples(gw.metrics())
            count = "http_server_request_duration_seconds_count"
            served = total(after, count, route="/rag") - total(before, count, route="/rag")
            served_ok = total(after, count, route="/rag", status="200") - total(
                before, count, route="/rag", status="200"
            )
            # wait until Prometheus has scraped everything the load produced
            poll(
                lambda: (
                    prom.scalar('sum(http_server_request_duration_seconds_count{route="/rag"})')
                    >= total(after, "http_server_request_duration_seconds_count", route="/rag")
                ),
                15,
            )
            time.sleep(1.5)  # one more scrape, so rate() has its last point after the load
            p95 = prom.scalar(DESIGN_P95)
            p99 = prom.scalar(DESIGN_P99)
            rag_p95 = prom.scalar(RAG_P95)
            hit_rate = prom.scalar(HIT_RATE)

    # every request hey sent was answered and counted once, and nothing failed
    ok = hey.status_counts.get(200, 0)
    assert set(hey.status_counts) == {200}, hey.output
    assert ok >= 50, hey.output
    # hey abandons its in-flight requests at the end: the gateway counts those as 499
    assert ok <= served_ok <= served <= ok + CONCURRENCY, (ok, served_ok, served)

    # the quantiles are numbers, ordered, inside the bucket range
    for v in (p95, p99, rag_p95):
        assert math.isfinite(v) and 0 < v <= 10, (p95, p99, rag_p95)
    assert p95 <= p99

    # consistent with the client: a request takes no longer inside the gateway than hey saw it
    # take, so the server p95 cannot lie above the bucket holding hey's p95; and it is not
    # absurdly small either: at least the bucket below the one holding hey's median
    _, hey_p95_upper = bucket_of(hey.percentiles[95])
    assert rag_p95 <= hey_p95_upper, (rag_p95, hey.percentiles)
    assert p95 <= hey_p95_upper, (p95, hey.percentiles)
    hey_p50_lower, _ = bucket_of(hey.percentiles[50])
    floor = bucket_of(hey_p50_lower)[0] if hey_p50_lower > 0 else 0.0
    assert rag_p95 >= floor, (rag_p95, hey.percentiles)

    # and consistent with the gateway's own counters over the same window
    delta = {
        le: c - buckets(before, "http_server_request_duration_seconds", route="/rag").get(le, 0.0)
        for le, c in buckets(after, "http_server_request_duration_seconds", route="/rag").items()
    }
    exact_p95 = histogram_quantile(0.95, delta)
    assert bucket_of(rag_p95) == bucket_of(exact_p95), (rag_p95, exact_p95)

    hits = total(after, "reranker_cache_hit_total") - total(before, "reranker_cache_hit_total")
    misses = total(after, "reranker_cache_miss_total") - total(before, "reranker_cache_miss_total")
    # every answered /rag request looked in the cache once (an abandoned one may have, too)
    assert served_ok <= hits + misses <= served, (hits, misses, served_ok, served)
    assert 1 <= misses <= CONCURRENCY  # only the first wave of the repeated query misses
    assert hit_rate > 0.9
    assert abs(hit_rate - hits / (hits + misses)) < 0.01, (hit_rate, hits, misses)
