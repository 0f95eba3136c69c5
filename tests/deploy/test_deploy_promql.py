"""PromQL of the dashboard, the alert rules and the canary AnalysisTemplates, checked by promtool.

- every expression (Grafana variables and {{args.x}} substituted) parses: `promtool check rules`
  on a generated recording-rule file;
- `promtool test rules` on synthetic series: each dashboard query returns known values (p95 of a
  histogram whose buckets are set up for it, etc.), each alert fires on a bad service and stays
  quiet on a healthy one, and each analysis query returns known values for a healthy, a slow, an
  erroring, an idle (no traffic: NaN) and an absent (no series) canary, with slow stable pods
  next to them; the templates' successConditions are then evaluated on those values.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import (
    ALERT_RULES,
    NAMESPACE,
    Source,
    alert_rules,
    analysis_metrics,
    analysis_templates,
    dashboard_exprs,
    eval_success_condition,
    run,
    substitute_grafana,
    tool,
)

BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]
MINUTES = 60
NAN = float("nan")


# --- synthetic series ----------------------------------------------------------------------------


def _labels(labels: dict[str, str]) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def counter(name: str, labels: dict[str, str], per_min: float, start: float = 0) -> dict[str, str]:
    return {"series": name + _labels(labels), "values": f"{start}+{per_min}x{MINUTES}"}


def gauge(name: str, labels: dict[str, str], value: float) -> dict[str, str]:
    return {"series": name + _labels(labels), "values": f"{value}x{MINUTES}"}


def histogram(
    name: str, labels: dict[str, str], per_min_by_bucket: dict[float, float], start: float = 0
) -> list[dict[str, str]]:
    """Cumulative buckets, _count: `per_min_by_bucket` maps a bucket's upper bound to the
    observations per minute that land in it (above the previous bound)."""
    out = []
    for le in [*BUCKETS, math.inf]:
        cum = sum(n for ub, n in per_min_by_bucket.items() if ub <= le)
        le_s = "+Inf" if le == math.inf else repr(float(le))  # as prometheus_client writes it
        out.append(counter(f"{name}_bucket", {**labels, "le": le_s}, cum, start))
    out.append(counter(f"{name}_count", labels, sum(per_min_by_bucket.values()), start))
    return out


HTTP = "http_server_request_duration_seconds"


def service_series(job: str, instance: str, *, slow: bool) -> list[dict[str, str]]:
    """A whole service. slow=True: p95 0.625 s, 2% 5xx, 10% rerank-cache hits, 5% answer-cache hits,
    10% degraded, reranker breaker open, target down. slow=False: p95 0.04875 s, no 5xx, 80% hits, breaker closed."""
    base = {"job": job, "instance": instance}
    req = {**base, "method": "POST", "route": "/rag"}
    s: list[dict[str, str]] = []
    if slow:
        s += histogram(HTTP, {**req, "status": "200"}, {0.05: 880, 0.75: 100})
        s += histogram(HTTP, {**req, "status": "503"}, {0.05: 20})
        s += [counter("reranker_cache_hit_total", base, 10), counter("reranker_cache_miss_total", base, 90)]
        s += [counter("rag_degraded_total", {**base, "component": "reranker", "reason": "circuit_open"}, 100)]
        s += [gauge("rag_circuit_breaker_state", {**base, "dependency": "reranker"}, 2)]
        s += [gauge("up", base, 0)]
        s += [counter("rag_search_exact_fallback_total", {**base, "reason": "short"}, 3)]
        s += [counter("rag_search_exact_fallback_total", {**base, "reason": "unverified_write"}, 0)]
        s += [
            counter("rag_answer_cache_hit_total", base, 5),
            counter("rag_answer_cache_miss_total", base, 95),
        ]
        s += [gauge("rag_snapshot_newest_timestamp_seconds", base, 0)]  # no snapshot at all
        # two failed snapshot creates a minute, each in (2.5, 5] s
        s += histogram("rag_snapshot_duration_seconds", {**base, "op": "create", "outcome": "error"}, {5: 2})
        # one failed reindex a minute, each in (2.5, 5] s; the newest ended a minute in
        s += histogram("rag_reindex_duration_seconds", {**base, "op": "reindex", "outcome": "error"}, {5: 1})
        s += [gauge("rag_reindex_last_failure_timestamp_seconds", base, 60)]
    else:
        s += histogram(HTTP, {**req, "status": "200"}, {0.05: 1000})
        s += [counter("reranker_cache_hit_total", base, 80), counter("reranker_cache_miss_total", base, 20)]
        s += [gauge("rag_circuit_breaker_state", {**base, "dependency": "reranker"}, 0)]
        s += [gauge("up", base, 1)]
        s += [counter("rag_search_exact_fallback_total", {**base, "reason": "short"}, 0)]
        # a snapshot taken at the start of the synthetic timeline (time() starts at 0 in promtool)
        s += [gauge("rag_snapshot_newest_timestamp_seconds", base, 1)]
        s += [gauge("rag_reindex_last_failure_timestamp_seconds", base, 0)]  # none failed
    s += histogram("rag_stage_duration_seconds", {**base, "stage": "rerank"}, {0.25: 1000})
    s += histogram("rag_stage_duration_seconds", {**base, "stage": "embed"}, {0.005: 1000})
    s += [counter("rag_upstream_retries_total", {**base, "dependency": "reranker"}, 60)]
    s += [gauge("rag_requests_in_flight", base, 5)]
    return s


# Expected dashboard values on the slow service at 10m, per panel title and refId:
# a list of (labels, value); every dashboard query must be listed here.
DASHBOARD_EXPECTED: dict[str, list[tuple[dict[str, str], float]]] = {
    # 1000 req/min: 900 at or under 0.05 s, 100 in (0.5, 0.75]: p95 = 0.5 + 0.25 * (950-900)/100
    "/rag latency p95 / p99 [A]": [({}, 0.625)],
    "/rag latency p95 / p99 [B]": [({}, 0.725)],
    "/rag request rate by status [A]": [({"status": "200"}, 980 / 60), ({"status": "503"}, 20 / 60)],
    "/rag 5xx error ratio [A]": [({}, 0.02)],
    "Rerank cache hit rate [A]": [({}, 0.1)],
    # all rerank observations in (0.1, 0.25]: 0.1 + 0.15 * 0.95; embed in (0.0025, 0.005]
    "Stage latency p95 by stage [A]": [({"stage": "embed"}, 0.004875), ({"stage": "rerank"}, 0.2425)],
    "Circuit breaker state (0 closed, 1 half-open, 2 open) [A]": [({"dependency": "reranker"}, 2)],
    "Degraded answers by component / reason [A]": [
        ({"component": "reranker", "reason": "circuit_open"}, 100 / 60)
    ],
    "Degraded ratio of /rag answers [A]": [({}, 0.1)],
    "Upstream retries by dependency [A]": [({"dependency": "reranker"}, 1.0)],
    "In-flight /rag requests [A]": [({}, 5)],
    "Searches answered by exact fallback, by reason [A]": [
        ({"reason": "short"}, 3 / 60),
        ({"reason": "unverified_write"}, 0),
    ],
    "Answer cache hit rate [A]": [({}, 0.05)],
    "Age of the newest snapshot [A]": [],  # none taken: no data, not an age of 56 years
    "Snapshot operations by outcome [A]": [({"op": "create", "outcome": "error"}, 2 / 60)],
    "Reindex jobs by outcome [A]": [({"op": "reindex", "outcome": "error"}, 1 / 60)],
}

# Alerts expected to fire on the slow service (labels besides alertname), none on the healthy one.
ALERTS_EXPECTED = {
    "RagGatewayLatencyP95High": [{"severity": "warning"}],
    "RagGateway5xxRatioHigh": [{"severity": "critical"}],
    "RagGatewayDegradedRatioHigh": [{"severity": "warning"}],
    "RagGatewayCircuitBreakerOpen": [{"severity": "warning", "dependency": "reranker"}],
    "RagGatewayCacheHitRateLow": [{"severity": "info"}],
    "RagGatewaySearchExactFallback": [{"severity": "warning", "reason": "short"}],
    "RagGatewayTargetDown": [{"severity": "critical", "job": "rag-gateway", "instance": "10.0.0.1:8080"}],
    "RagGatewaySnapshotStale": [{"severity": "warning", "job": "rag-gateway"}],
    "RagGatewayReindexFailed": [{"severity": "warning", "job": "rag-gateway"}],
}


# promtool compares sample values exactly: both sides are rounded to a multiple of 2^-30
# (~1e-9; a power of two, so the rounding itself is exact in floating point), so float noise
# (0.6249999999999998 for 0.625) does not count while any real difference still does.
QUANTUM = 2.0**-30


def _round(value: float) -> float:
    return math.floor(value / QUANTUM + 0.5) * QUANTUM


def _sample(labels: dict[str, str], value: float) -> dict[str, Any]:
    return {"labels": _labels(labels), "value": _round(value)}


def rounded(expr: str) -> str:
    return f"round(({expr}), {QUANTUM!r})"


def promtool_test(tmp_path: Path, groups: list[dict[str, Any]], rule_files: list[str]) -> tuple[int, str]:
    path = tmp_path / "promtool-test.yml"
    path.write_text(
        yaml.safe_dump(
            {"rule_files": rule_files, "evaluation_interval": "1m", "tests": groups}, sort_keys=False
        )
    )
    proc = run([tool("promtool"), "test", "rules", str(path)], cwd=tmp_path)
    return proc.returncode, proc.stdout + proc.stderr


def stripped_rules(tmp_path: Path) -> str:
    """The alert rules without annotations (promtool would compare the rendered texts too;
    annotations are checked by `promtool check rules` and the runbook tests)."""
    data = yaml.safe_load(ALERT_RULES.read_text())
    for group in data["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    path = tmp_path / "rules-without-annotations.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


# --- promtool check rules --------------------------------------------------------------------


def all_expressions(sources: dict[str, Source]) -> list[tuple[str, str]]:
    exprs = [(f"dashboard: {t}", substitute_grafana(e)) for t, e in dashboard_exprs()]
    exprs += [(f"alert: {r['alert']}", r["expr"]) for r in alert_rules()]
    for name in ("k8s", "helm-ci"):
        for template in analysis_templates(sources[name]):
            for m in analysis_metrics(template, {"canary-hash": "6d5f7c9b8", "namespace": NAMESPACE}):
                exprs.append((f"analysis {name}: {template['metadata']['name']}/{m['name']}", m["query"]))
    return exprs


def test_every_expression_passes_promtool_check_rules(tmp_path: Path, sources: dict[str, Source]) -> None:
    exprs = all_expressions(sources)
    kinds = {label.split(":")[0] for label, _ in exprs}
    assert {"dashboard", "alert", "analysis k8s", "analysis helm-ci"} <= kinds, kinds
    rules = [{"record": f"deploy_check:expr_{i}", "expr": e} for i, (_, e) in enumerate(exprs)]
    path = tmp_path / "generated-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "generated", "rules": rules}]}, sort_keys=False))
    proc = run([tool("promtool"), "check", "rules", str(path)])
    listing = "\n".join(f"expr_{i}: {label}" for i, (label, _) in enumerate(exprs))
    assert proc.returncode == 0, f"{proc.stdout}{proc.stderr}\n{listing}"
    assert f"SUCCESS: {len(rules)} rules found" in proc.stdout


def test_alert_rule_file_passes_promtool_check_rules() -> None:
    proc = run([tool("promtool"), "check", "rules", str(ALERT_RULES)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in proc.stdout


def test_promtool_check_rejects_a_broken_expression(tmp_path: Path) -> None:
    # The harness can fail: a malformed expression (as a bad substitution would leave) is refused.
    path = tmp_path / "broken.yml"
    path.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {"name": "g", "rules": [{"record": "x:y", "expr": "sum(rate(foo[$__rate_interval]))"}]}
                ]
            }
        )
    )
    assert run([tool("promtool"), "check", "rules", str(path)]).returncode != 0


# --- dashboard and alerts on synthetic series --------------------------------------------------


def test_dashboard_queries_give_known_values(tmp_path: Path) -> None:
    exprs = dict(dashboard_exprs())
    assert set(exprs) == set(DASHBOARD_EXPECTED), (
        f"dashboard queries without an expectation: {set(exprs) - set(DASHBOARD_EXPECTED)}; "
        f"expectations without a query: {set(DASHBOARD_EXPECTED) - set(exprs)}"
    )
    tests = [
        {
            "expr": rounded(substitute_grafana(exprs[title])),
            "eval_time": "10m",
            "exp_samples": [_sample(lab, v) for lab, v in expected],
        }
        for title, expected in DASHBOARD_EXPECTED.items()
    ]
    group = {
        "name": "dashboard",
        "interval": "1m",
        "input_series": service_series("rag-gateway", "10.0.0.1:8080", slow=True),
        "promql_expr_test": tests,
    }
    code, out = promtool_test(tmp_path, [group], [])
    assert code == 0, out


def test_dashboard_check_fails_on_a_wrong_p95(tmp_path: Path) -> None:
    # The same harness reports a mismatch: p95 is 0.625 s, not 0.5 s.
    expr = substitute_grafana(dict(dashboard_exprs())["/rag latency p95 / p99 [A]"])
    group = {
        "interval": "1m",
        "input_series": service_series("rag-gateway", "10.0.0.1:8080", slow=True),
        "promql_expr_test": [{"expr": rounded(expr), "eval_time": "10m", "exp_samples": [_sample({}, 0.5)]}],
    }
    code, out = promtool_test(tmp_path, [group], [])
    assert code != 0 and "6.25E-01" in out, out


def test_alerts_fire_on_a_bad_service_and_not_on_a_healthy_one(tmp_path: Path) -> None:
    names = {r["alert"] for r in alert_rules()}
    assert names == set(ALERTS_EXPECTED), f"alerts without a synthetic test: {names ^ set(ALERTS_EXPECTED)}"
    bad = {
        "name": "bad service",
        "interval": "1m",
        "input_series": service_series("rag-gateway", "10.0.0.1:8080", slow=True),
        "alert_rule_test": [
            # `for:` holds the latency alert back at 5m; every alert fires by 50m.
            {"alertname": "RagGatewayLatencyP95High", "eval_time": "5m", "exp_alerts": []},
            *(
                {"alertname": a, "eval_time": "50m", "exp_alerts": [{"exp_labels": lab} for lab in labels]}
                for a, labels in ALERTS_EXPECTED.items()
            ),
        ],
    }
    healthy = {
        "name": "healthy service",
        "interval": "1m",
        "input_series": service_series("rag-gateway", "10.0.0.1:8080", slow=False),
        "alert_rule_test": [{"alertname": a, "eval_time": "50m", "exp_alerts": []} for a in ALERTS_EXPECTED],
    }
    code, out = promtool_test(tmp_path, [bad, healthy], [stripped_rules(tmp_path)])
    assert code == 0, out


# --- canary analysis -----------------------------------------------------------------------------

CANARY = {"namespace": NAMESPACE, "method": "POST", "route": "/rag"}


def canary_series(job: str) -> list[dict[str, str]]:
    def pod(h: str, i: int) -> dict[str, str]:
        return {**CANARY, "job": job, "instance": f"10.1.0.{i}:8080", "rollouts_pod_template_hash": h}

    def degraded(h: str, i: int, reason: str, per_min: float, start: float = 0) -> dict[str, str]:
        """The pod's rag_degraded_total{component="reranker", reason=...} counter."""
        labels = {**_pod_base(pod(h, i)), "component": "reranker", "reason": reason}
        return counter("rag_degraded_total", labels, per_min, start=start)

    s: list[dict[str, str]] = []
    # healthy: p95 0.04875 s, 0.5% 5xx, 2% degraded
    s += histogram(HTTP, {**pod("healthy", 1), "status": "200"}, {0.05: 597})
    s += histogram(HTTP, {**pod("healthy", 1), "status": "503"}, {0.05: 3})
    s += [degraded("healthy", 1, "timeout", 12)]
    # slow: p95 0.9875 s, 9.1% 5xx, 10% degraded
    s += histogram(HTTP, {**pod("slow", 2), "status": "200"}, {1: 600})
    s += histogram(HTTP, {**pod("slow", 2), "status": "503"}, {1: 60})
    s += [degraded("slow", 2, "circuit_open", 66)]
    # erroring: fast, but 5% 5xx
    s += histogram(HTTP, {**pod("erroring", 3), "status": "200"}, {0.05: 570})
    s += histogram(HTTP, {**pod("erroring", 3), "status": "504"}, {0.05: 30})
    # idle: series exist, no new requests (rates 0: quantile and ratios NaN)
    s += histogram(HTTP, {**pod("idle", 4), "status": "200"}, {0.05: 0}, start=100)
    s += [degraded("idle", 4, "timeout", 0, start=3)]
    # the stable pods are slow and failing: a query that ignores the canary hash would see them
    s += histogram(HTTP, {**pod("stable", 9), "status": "200"}, {5: 600})
    s += histogram(HTTP, {**pod("stable", 9), "status": "500"}, {5: 600})
    s += [degraded("stable", 9, "error", 600)]
    # a slow canary with the same hash in another namespace must not leak in either
    s += histogram(HTTP, {**pod("healthy", 7), "namespace": "other", "status": "200"}, {10: 6000})
    return s


def _pod_base(labels: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if k not in ("method", "route")}


# (scenario -> metric -> expected query result: a number, NaN, or None for an empty vector),
# and whether the metric's successCondition must hold.
CANARY_EXPECTED: dict[str, dict[str, tuple[float | None, bool]]] = {
    "healthy": {"p95-latency": (0.04875, True), "error-ratio": (0.005, True), "degraded-ratio": (0.02, True)},
    "slow": {
        "p95-latency": (0.9875, False),
        "error-ratio": (60 / 660, False),
        "degraded-ratio": (0.1, False),
    },
    "erroring": {"p95-latency": (0.04875, True), "error-ratio": (0.05, False), "degraded-ratio": (0.0, True)},
    "idle": {"p95-latency": (NAN, True), "error-ratio": (NAN, True), "degraded-ratio": (NAN, True)},
    "absent": {"p95-latency": (None, True), "error-ratio": (None, True), "degraded-ratio": (None, True)},
}


def _expr_test(query: str, expected: float | None) -> dict[str, Any]:
    if expected is None:
        return {"expr": query, "eval_time": "10m", "exp_samples": []}
    if math.isnan(expected):
        # promtool cannot compare NaN with NaN: assert NaN-ness (x != x) instead
        return {"expr": f"({query}) != bool ({query})", "eval_time": "10m", "exp_samples": [_sample({}, 1)]}
    return {"expr": rounded(query), "eval_time": "10m", "exp_samples": [_sample({}, expected)]}


@pytest.mark.parametrize("source_name", ["k8s", "helm-ci"])
def test_analysis_queries_and_success_conditions(
    tmp_path: Path, sources: dict[str, Source], source_name: str
) -> None:
    templates = analysis_templates(sources[source_name])
    assert len(templates) == 1, f"{source_name}: expected one AnalysisTemplate"
    template = templates[0]
    job = template_job(template)
    tests, verdicts = [], []
    for scenario, expected in CANARY_EXPECTED.items():
        metrics = analysis_metrics(template, {"canary-hash": scenario, "namespace": NAMESPACE})
        assert {m["name"] for m in metrics} == set(expected), (
            f"metrics changed: {[m['name'] for m in metrics]}"
        )
        for m in metrics:
            value, should_pass = expected[m["name"]]
            tests.append(_expr_test(m["query"], value))
            result = [] if value is None else [value]
            verdicts.append((scenario, m["name"], m["successCondition"], result, should_pass))
    group = {
        "name": f"canary analysis ({source_name})",
        "interval": "1m",
        "input_series": canary_series(job),
        "promql_expr_test": tests,
    }
    code, out = promtool_test(tmp_path, [group], [])
    assert code == 0, out
    # The values above are what the queries return (promtool checked them); the templates'
    # own successConditions decide on them.
    wrong = [
        f"{scenario}/{name}: {cond!r} on {result} gave {not ok}, want {ok}"
        for scenario, name, cond, result, ok in verdicts
        if eval_success_condition(cond, result) is not ok
    ]
    assert not wrong, "\n".join(wrong)


def template_job(template: dict[str, Any]) -> str:
    args = {a["name"]: a.get("value") for a in template["spec"]["args"]}
    assert args.get("service-name"), "the AnalysisTemplate needs a service-name default"
    return str(args["service-name"])


def test_success_condition_evaluator_is_strict() -> None:
    assert eval_success_condition("len(result) == 0 || isNaN(result[0]) || result[0] <= 0.5", [0.7]) is False
    assert eval_success_condition("len(result) == 0 || isNaN(result[0]) || result[0] <= 0.5", []) is True
    with pytest.raises(ValueError, match="unsupported successCondition syntax"):
        eval_success_condition("result[0] <= 0.5 or __import__('os')", [0.1])
