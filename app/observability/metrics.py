"""Every Prometheus metric of the gateway (names, labels and buckets are the DESIGN §3 contract).

The registry is injectable so tests and several apps in one process never share state.
Labelled children on the hot path are cached in dicts, so a request allocates no metric object.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
STAGES = ("embed", "search", "rerank", "cache")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.http_duration = Histogram(
            "http_server_request_duration_seconds",
            "Duration of HTTP requests, by route template and status",
            ["method", "route", "status"],
            buckets=BUCKETS,
            registry=r,
        )
        self.cache_hit = Counter("reranker_cache_hit_total", "Rerank cache hits", registry=r)
        self.cache_miss = Counter("reranker_cache_miss_total", "Rerank cache misses", registry=r)
        self.stage_duration = Histogram(
            "rag_stage_duration_seconds",
            "Duration of one pipeline stage",
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
        )
        self.in_flight = Gauge("rag_requests_in_flight", "In-flight /rag requests", registry=r)
        self._stage = {s: self.stage_duration.labels(stage=s) for s in STAGES}
        self._http: dict[tuple[str, str, int], Histogram] = {}
        self._degraded: dict[tuple[str, str], Counter] = {}
        self._retries: dict[str, Counter] = {}

    def observe_stage(self, stage: str, seconds: float) -> None:
        self._stage[stage].observe(seconds)

    def observe_http(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        child = self._http.get(key)
        if child is None:
            child = self._http[key] = self.http_duration.labels(method, route, str(status))
        child.observe(seconds)

    def count_degraded(self, component: str, reason: str) -> None:
        child = _child(self._degraded, (component, reason), self.degraded)
        child.inc()

    def count_retry(self, dependency: str) -> None:
        child = self._retries.get(dependency)
        if child is None:
            child = self._retries[dependency] = self.retries.labels(dependency)
        child.inc()

    def set_breaker_state(self, dependency: str, state: int) -> None:
        self.breaker_state.labels(dependency).set(state)


def _child(cache: dict[tuple[str, str], Counter], key: tuple[str, str], metric: Counter) -> Counter:
    child = cache.get(key)
    if child is None:
        child = cache[key] = metric.labels(*key)
    return child
