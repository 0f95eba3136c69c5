"""The compose stack, run with podman-compose (`make test-container`).

docker/docker-compose.yml with docker/docker-compose.podman.yml, which overrides only what cannot
be had without an image registry: Qdrant, Grafana and the collector left out (the gateway on its
embedded engine), Redis and Prometheus from local Debian-based images. The gateway reaches Redis
over the compose network (a second identical /rag is a cache hit), Prometheus scrapes it through
docker/prometheus.yml (up == 1) and loads the alert rules, the dashboard's p95 and hit-rate
queries return numbers after a short hey run, and `down -v` leaves nothing behind.

The tests run in file order against one stack; the last one takes it down.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from deploy_support import ROOT, alert_rules, dashboard_exprs, hey_rag, substitute_grafana
from support.poll import poll
from test_deploy_image_run import containers_can_run, sh

pytestmark = pytest.mark.container

PROJECT = "rag-gateway-stacktest"
GATEWAY = "http://127.0.0.1:8080"
PROMETHEUS = "http://127.0.0.1:9090"
CORPUS = 300


def compose(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable}
    return sh(
        "bash", str(ROOT / "scripts" / "container_stack.sh"), "compose", "-p", PROJECT, *args,
        timeout=timeout, env=env,
    )  # fmt: skip


def container(service: str) -> str:
    return f"{PROJECT}_{service}_1"


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def post(path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    return post_with_headers(path, body, headers)[0]


def post_with_headers(
    path: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    req = urllib.request.Request(
        GATEWAY + path,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", **(headers or {})},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200
        return dict(json.loads(resp.read())), {k.lower(): v for k, v in resp.headers.items()}


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def promql(expr: str) -> list[dict[str, Any]]:
    data = get_json(f"{PROMETHEUS}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
    assert data["status"] == "success", data
    return list(data["data"]["result"])


def healthy(name: str) -> bool:
    sh("podman", "healthcheck", "run", name, check=False)
    out = sh("podman", "inspect", "--format", "{{.State.Health.Status}}", name, check=False)
    return out.stdout.strip() == "healthy"


@dataclass
class Stack:
    volumes_before: set[str]
    down: bool = False


def volumes() -> set[str]:
    return set(sh("podman", "volume", "ls", "-q").stdout.split())


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    containers_can_run()
    busy = [p for p in (8080, 9090) if not port_free(p)]
    assert not busy, f"the stack publishes 8080 and 9090, and {busy} are taken on this host"
    env = {**os.environ, "PYTHON": sys.executable}
    images = sh("bash", str(ROOT / "scripts" / "container_stack.sh"), "images", timeout=1800, env=env)
    assert images.returncode == 0
    st = Stack(volumes())
    try:
        compose("up", "-d")
        yield st
    finally:
        if not st.down:
            compose("down", "-v", "-t", "5", timeout=180)


def test_services_up_as_overridden(stack: Stack) -> None:
    ps = sh(
        "podman", "ps", "-a", "--filter", f"label=io.podman.compose.project={PROJECT}", "--format", "json"
    )
    names = {c["Labels"]["io.podman.compose.service"]: c["State"] for c in json.loads(ps.stdout)}
    assert names == {"gateway": "running", "redis": "running", "prometheus": "running"}, names
    poll(lambda: healthy(container("redis")), 60, interval=1, what="redis healthy")
    poll(lambda: healthy(container("gateway")), 120, interval=1, what="gateway healthy")


def test_bootstrap_inside_the_gateway_then_ready_with_redis(stack: Stack) -> None:
    gw = container("gateway")
    sh("podman", "exec", gw, "python", "scripts/qdrant_bootstrap.py", "--n", str(CORPUS), timeout=600)
    sh("podman", "restart", "-t", "10", gw, timeout=60)
    poll(lambda: healthy(gw), 120, interval=1, what="gateway healthy after restart")
    ready = get_json(f"{GATEWAY}/readyz")  # 200, or urlopen raises
    assert {"embedder", "qdrant", "redis"} <= set(ready["ok"]) and not ready["failing"], ready


def test_second_identical_rag_is_a_cache_hit(stack: Stack) -> None:
    """As shipped, a repeat is answered whole by the answer cache; past it (`no-cache`), the
    rerank cache in Redis has the scores."""
    body = {"q": "how do I keep a sourdough starter alive", "k": 50}
    first, h1 = post_with_headers("/rag", body)
    assert first["cache"] == "miss" and first["reranked"] is True, first
    assert h1["x-answer-cache"] == "miss", h1

    def stored() -> bool:
        keys = sh("podman", "exec", container("redis"), "redis-cli", "--scan", "--pattern", "rerank:*").stdout
        return bool(keys.split())

    poll(stored, 10, interval=1, what="the rerank result written to Redis")
    second, h2 = post_with_headers("/rag", body)
    assert h2["x-answer-cache"] == "hit", h2
    assert second["request_id"] != first["request_id"]
    assert second["results"] == first["results"]
    third, h3 = post_with_headers("/rag", body, {"cache-control": "no-cache"})
    assert h3["x-answer-cache"] == "bypass", h3
    assert third["cache"] == "hit", third
    assert [p["id"] for p in third["results"]] == [p["id"] for p in first["results"]]


def test_prometheus_scrapes_the_gateway_and_loads_the_rules(stack: Stack) -> None:
    def up() -> list[dict[str, Any]]:
        return [r for r in promql('up{job="rag-gateway"}') if r["value"][1] == "1"]

    [target] = poll(up, 60, interval=1, what="up{job=rag-gateway} == 1")
    assert target["metric"]["instance"] == "gateway:8080"

    # a rule's health is "unknown" until its group is first evaluated (every 15 s, each group on
    # its own offset): wait for every rule's first evaluation, then its health must be ok
    def evaluated() -> list[dict[str, Any]] | None:
        groups: list[dict[str, Any]] = get_json(f"{PROMETHEUS}/api/v1/rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return groups if rules and all(r["health"] != "unknown" for r in rules) else None

    groups = poll(evaluated, 60, interval=1, what="every rule evaluated once")
    loaded = {r["name"] for g in groups for r in g["rules"]}
    expected = {r.get("alert") or r.get("record") for r in alert_rules()}
    assert expected and expected <= loaded, expected - loaded
    assert all(r["health"] == "ok" for g in groups for r in g["rules"]), groups


def test_dashboard_p95_and_hit_rate_after_hey(stack: Stack) -> None:
    # A rate needs an increase between two scrapes. If the first scrape that holds the /rag
    # series came only after hey, every later one holds the same counts: rate 0 and no p95,
    # ever (seen once). So first wait until Prometheus holds the series, then load it.
    post("/rag", {"q": "what causes inflation", "k": 50})

    def scraped(name: str) -> bool:
        return bool(promql(f'sum({name}{{route="/rag"}}) > 0' if "duration" in name else f"{name} >= 0"))

    poll(lambda: scraped("http_server_request_duration_seconds_count"), 60, interval=1, what="/rag scraped")
    poll(lambda: scraped("reranker_cache_miss_total"), 60, interval=1, what="the cache counters scraped")
    # past the answer cache, so that every request reaches the rerank cache the panel plots
    codes, out = hey_rag(GATEWAY, concurrency=10, headers=("Cache-Control: no-cache",))
    assert set(codes) == {"200"}, out
    exprs = dict(dashboard_exprs())
    p95 = next(e for e in exprs.values() if "histogram_quantile(0.95" in e and 'route="/rag"' in e)
    hit_rate = next(e for e in exprs.values() if "reranker_cache_hit_total" in e)

    def number(expr: str) -> float | None:
        result = promql(substitute_grafana(expr))
        values = [float(r["value"][1]) for r in result]
        return values[0] if values and all(math.isfinite(v) for v in values) else None

    # the next scrape after hey holds the increase
    p95_s = poll(lambda: number(p95), 90, interval=1, what="the dashboard's p95 has a value")
    hits = poll(lambda: number(hit_rate), 30, interval=1, what="the dashboard's hit rate has a value")
    assert 0 < p95_s < 10 and 0 < hits <= 1, (p95_s, hits)
    print(f"stack after hey: p95 {p95_s * 1000:.0f} ms, rerank cache hit rate {hits:.2f}")


def test_down_v_leaves_nothing(stack: Stack) -> None:
    compose("down", "-v", "-t", "5", timeout=180)
    stack.down = True
    label = f"label=io.podman.compose.project={PROJECT}"
    assert sh("podman", "ps", "-aq", "--filter", label).stdout.split() == []
    assert sh("podman", "volume", "ls", "-q", "--filter", label).stdout.split() == []
    assert sh("podman", "network", "ls", "-q", "--filter", label).stdout.split() == []
    assert volumes() - stack.volumes_before == set(), "volumes left behind"
