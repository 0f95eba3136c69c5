"""The Grafana dashboard: type-checked against @grafana/schema's Dashboard (tsc), and the panels
the SLO needs are there, with the data source as a template variable."""

from __future__ import annotations

from deploy_support import dashboard, dashboard_exprs, ts_literal, typecheck

# String enums of the schema (ThresholdsMode, ...) accept their literal values in JSON; map each
# enum type to the union of its literals so a JSON document can be checked with excess-property
# checks intact (a misspelt field or an unknown enum value is still an error).
PRELUDE = """
import type { Dashboard } from "@grafana/schema";

type Literal<T> = T extends string
  ? `${T}`
  : T extends number | boolean | null | undefined
    ? T
    : T extends Array<infer U>
      ? Array<Literal<U>>
      : T extends object
        ? { [K in keyof T]: Literal<T[K]> }
        : T;

interface PrometheusTarget {
  refId: string;
  datasource: { type: "prometheus"; uid: string };
  expr: string;
  legendFormat?: string;
  range?: boolean;
  instant?: boolean;
}
"""


def test_dashboard_typechecks_against_grafana_schema() -> None:
    dash = dashboard()
    targets = [t for p in dash["panels"] for t in p.get("targets", [])]
    source = (
        PRELUDE
        + f"export const dashboard: Literal<Dashboard> = {ts_literal(dash)};\n"
        + f"export const targets: PrometheusTarget[] = {ts_literal(targets)};\n"
        + "// @ts-expect-error negative control: an unknown dashboard field must be an error\n"
        + 'export const control: Literal<Dashboard> = { schemaVersion: 39, titel: "x" };\n'
        + "// @ts-expect-error negative control: an unknown thresholds mode must be an error\n"
        + 'export const control2: Literal<Dashboard> = { schemaVersion: 39, panels: [{ type: "timeseries", fieldConfig: { defaults: { thresholds: { mode: "relative", steps: [] } }, overrides: [] } }] };\n'
    )
    code, out = typecheck({"dashboard.mts": source})
    assert code == 0, out


def test_dashboard_shape() -> None:
    dash = dashboard()
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    exprs = "\n".join(e for _, e in dashboard_exprs())
    for needle in (
        "histogram_quantile(0.95, sum by (le) (rate(http_server_request_duration_seconds_bucket{",
        "histogram_quantile(0.99,",
        'route="/rag"',
        'status=~"5.."',
        "reranker_cache_hit_total",
        "reranker_cache_miss_total",
        "rag_answer_cache_hit_total",
        "rag_answer_cache_miss_total",
        "rag_snapshot_newest_timestamp_seconds",
        "rag_snapshot_duration_seconds_count",
        "sum by (le, stage) (rate(rag_stage_duration_seconds_bucket",
        "rag_circuit_breaker_state",
        "rag_degraded_total",
    ):
        assert needle in exprs, needle
