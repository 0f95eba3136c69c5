"""The Helm chart: `helm lint --strict` and rendering (Helm v4 SDK, offline) with the default
values and ci/ci-values.yaml; optional features stay off by default and all come on in CI.
(The rendered manifests go through the same validators as k8s/: see test_deploy_kubernetes.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from deploy_support import CHART_DIR, VALUE_SETS, Source, lint_chart, render_chart, values_for

OPTIONAL = {
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "ServiceMonitor",
    "NetworkPolicy",
    "Ingress",
    "Rollout",
    "AnalysisTemplate",
}


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_lint_strict(name: str) -> None:
    report = lint_chart(values_for(name))
    assert report["total_charts_linted"] == 1
    assert not report["errors"], report
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # warnings and errors
    assert not problems, problems


def test_helm_lint_catches_a_broken_template(tmp_path: Path) -> None:
    import shutil

    import helm_python as helm

    broken = tmp_path / "rag-gateway"
    shutil.copytree(CHART_DIR, broken)
    (broken / "templates" / "broken.yaml").write_text(
        "kind: ConfigMap\nmetadata:\n  name: {{ .Values.nope.deeper }}\n"
    )
    report = helm.lint(str(broken), None, strict=True)
    assert report["errors"] or any(m["severity"] >= 2 for m in report["messages"]), report


def test_optional_features_are_opt_in(sources: dict[str, Source]) -> None:
    default_kinds = {d["kind"] for d in sources["helm-default"].docs()}
    ci_kinds = {d["kind"] for d in sources["helm-ci"].docs()}
    assert not (default_kinds & OPTIONAL), f"on by default: {default_kinds & OPTIONAL}"
    assert "Deployment" in default_kinds
    assert ci_kinds >= OPTIONAL, f"ci-values misses: {OPTIONAL - ci_kinds}"
    assert "Deployment" not in ci_kinds, "rollout.enabled renders a Rollout instead of a Deployment"


def test_values_drive_the_rendering() -> None:
    values = values_for("helm-ci") or {}
    values["image"] = {"tag": "1.2.3"}
    values["rollout"] = {
        "enabled": True,
        "canarySteps": [{"weight": 10, "pause": "1m"}, {"weight": 50, "pause": "2m"}],
    }
    values["analysis"] = {"enabled": True, "thresholds": {"p95Seconds": "0.3"}}
    values["otel"] = {"endpoint": "http://collector:4318"}
    values["hpa"] = {"enabled": True, "maxReplicas": 7}
    out = "\n".join(render_chart(values).values())
    assert "ghcr.io/rag-gateway/rag-gateway:1.2.3" in out
    assert "setWeight: 10" in out and "setWeight: 50" in out and "duration: 2m" in out
    assert 'name: p95-threshold-seconds\n      value: "0.3"' in out
    assert 'OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318"' in out
    assert "maxReplicas: 7" in out


def test_shared_jobs_mount_one_claim_and_set_the_redis_queue() -> None:
    """sharedJobs: every pod mounts the same ReadWriteMany claim as its jobs directory and runs
    jobs from the Redis queue; without a claim name the chart refuses to render."""
    import helm_python as helm

    values = values_for("helm-ci") or {}
    values["sharedJobs"] = {
        "enabled": True,
        "claimName": "jobs-rwx",
        "mountPath": "/jobs",
        "leaseSeconds": 45,
    }
    rendered = render_chart(values)
    out = "\n".join(rendered.values())
    pods = [
        d["spec"]["template"]["spec"]
        for name, text in rendered.items()
        if name.endswith(".yaml")
        for d in yaml.safe_load_all(text)
        if d and d.get("kind") in ("Rollout", "Deployment")
    ]
    assert pods
    for pod in pods:
        assert {"name": "shared-jobs", "persistentVolumeClaim": {"claimName": "jobs-rwx"}} in pod["volumes"]
        for container in pod["containers"]:
            assert {"name": "shared-jobs", "mountPath": "/jobs"} in container["volumeMounts"]
    assert 'RAG_JOBS__QUEUE: "redis"' in out and 'RAG_JOBS__DIR: "/jobs"' in out
    assert 'RAG_JOBS__LEASE_S: "45"' in out
    default = "\n".join(render_chart(values_for("helm-default")).values())
    assert "RAG_JOBS__QUEUE" not in default and "shared-jobs" not in default
    values["sharedJobs"] = {"enabled": True}
    with pytest.raises(helm.HelmError, match=r"sharedJobs\.claimName"):
        render_chart(values)


def test_latest_tag_is_refused() -> None:
    import helm_python as helm

    with pytest.raises(helm.HelmError, match="pinned version"):
        render_chart({"image": {"tag": "latest"}})


def test_notes_render(sources: dict[str, Source]) -> None:
    for name in VALUE_SETS:
        notes = render_chart(values_for(name))["rag-gateway/templates/NOTES.txt"]
        assert "rag-gateway" in notes and "/readyz" in notes
