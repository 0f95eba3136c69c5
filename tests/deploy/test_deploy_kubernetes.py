"""Kubernetes manifests: k8s/ and the Helm chart rendered with default and CI values.

- built-in kinds: `kubernetes-validate --strict` (unknown fields fail), the Rollout's pod
  template included (validated as a Deployment's);
- Rollout / AnalysisTemplate: @kubernetes-models/argo-rollouts `validate()` and `tsc --noEmit`
  assigning each object to IRollout / IAnalysisTemplate (catches unknown fields);
- checkov (skips only with a reason in a checkov.io/skip annotation);
- the hardening and wiring rules of the issue, asserted directly.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import (
    CHECKOV,
    CRD_KINDS,
    NAMESPACE,
    ROOT,
    Source,
    run,
    template_arg_defaults,
    ts_literal,
    typecheck,
    venv_bin,
    workload_as_deployment,
)

# --- kubernetes-validate ---------------------------------------------------------------------------


def _kv(files: list[Path]) -> tuple[int, str]:
    proc = run([venv_bin("kubernetes-validate"), "--strict", *map(str, files)])
    return proc.returncode, proc.stdout + proc.stderr


def test_kubernetes_validate_strict(source: Source, tmp_path: Path) -> None:
    files = list(source.files)
    for rollout in source.kind("Rollout"):
        path = tmp_path / f"{rollout['metadata']['name']}-pod-template-as-deployment.yaml"
        path.write_text(yaml.safe_dump(workload_as_deployment(rollout)))
        files.append(path)
    code, out = _kv(files)
    assert code == 0, out
    builtin = [d for d in source.docs() if d["kind"] not in CRD_KINDS]
    passed = re.findall(r"^INFO .* passed for resource", out, flags=re.M)
    assert len(passed) == len(builtin) + len(source.kind("Rollout")), out
    for line in out.splitlines():
        if line.startswith("WARN"):
            assert "Couldn't find schema for kind" in line and any(f"kind {k} " in line for k in CRD_KINDS), (
                line
            )


def test_kubernetes_validate_rejects_unknown_fields(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  ports: [{port: 8080, targetPrt: 8080}]\n"
    )
    code, out = _kv([bad])
    assert code != 0, out


# --- Argo Rollouts models --------------------------------------------------------------------------


def argo_objects(source: Source) -> list[dict[str, Any]]:
    return source.kind("Rollout") + source.kind("AnalysisTemplate")


def test_argo_objects_validate_with_kubernetes_models(source: Source, tmp_path: Path) -> None:
    objects = argo_objects(source)
    if source.name == "helm-default":
        assert objects == [], "the default chart renders a Deployment, no Argo objects"
        return
    assert {o["kind"] for o in objects} == {"Rollout", "AnalysisTemplate"}
    # a negative control rides along: a Rollout whose replicas is not an integer must fail
    broken = json.loads(json.dumps(source.kind("Rollout")[0]))
    broken["metadata"]["name"] = "broken-control"
    broken["spec"]["replicas"] = "three"
    path = tmp_path / "objects.json"
    path.write_text(json.dumps([*objects, broken]))
    proc = run(["node", str(ROOT / "tests" / "deploy" / "validate_argo.mjs"), str(path)])
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    control = results.pop()
    assert not control["ok"], "validate() accepted a non-integer replicas: the check cannot fail"
    bad = [r for r in results if not r["ok"]]
    assert not bad, bad


def test_argo_objects_typecheck_against_irollout_ianalysistemplate(sources: dict[str, Source]) -> None:
    lines = [
        'import type { IRollout } from "@kubernetes-models/argo-rollouts/argoproj.io/v1alpha1/Rollout";',
        'import type { IAnalysisTemplate } from "@kubernetes-models/argo-rollouts/argoproj.io/v1alpha1/AnalysisTemplate";',
    ]
    count = 0
    for name in ("k8s", "helm-ci"):
        for obj in argo_objects(sources[name]):
            iface = {"Rollout": "IRollout", "AnalysisTemplate": "IAnalysisTemplate"}[obj["kind"]]
            lines.append(f"export const obj{count}: {iface} = {ts_literal(obj)};")
            count += 1
    assert count == 4
    # Negative controls: if unknown fields stopped being errors, "Unused '@ts-expect-error'" fails the run.
    lines += [
        "// @ts-expect-error unknown field in the canary strategy",
        'export const control1: IRollout = { apiVersion: "argoproj.io/v1alpha1", kind: "Rollout", spec: { strategy: { canary: { stepz: [] } } } };',
        "// @ts-expect-error unknown field in a Prometheus provider",
        'export const control2: IAnalysisTemplate = { apiVersion: "argoproj.io/v1alpha1", kind: "AnalysisTemplate", spec: { metrics: [{ name: "m", provider: { prometheus: { adress: "x" } } }] } };',
    ]
    code, out = typecheck({"argo.mts": "\n".join(lines) + "\n"})
    assert code == 0, out


# --- checkov ---------------------------------------------------------------------------------------

# Checks that must have run and passed on the gateway workload (proves the pod spec was scanned).
WORKLOAD_CHECKS = {
    "CKV_K8S_8",  # liveness probe
    "CKV_K8S_9",  # readiness probe
    "CKV_K8S_10",
    "CKV_K8S_11",
    "CKV_K8S_12",
    "CKV_K8S_13",  # cpu/memory requests and limits
    "CKV_K8S_20",  # allowPrivilegeEscalation false
    "CKV_K8S_22",  # read-only root filesystem
    "CKV_K8S_23",  # no root containers
    "CKV_K8S_28",
    "CKV_K8S_37",  # capabilities dropped
    "CKV_K8S_31",  # seccomp RuntimeDefault
    "CKV_K8S_38",  # service account token not mounted
    "CKV_K8S_40",  # high UID
}
ALLOWED_SKIPS = {"CKV_K8S_43", "CKV_K8S_35"}


@pytest.fixture(scope="session")
def checkov_reports(
    sources: dict[str, Source], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, Any]]:
    """One checkov scan per source, run concurrently (each takes a few CPU seconds)."""
    import subprocess

    procs = {}
    for name, source in sources.items():
        scan = tmp_path_factory.mktemp(f"checkov-{name}")
        for f in source.files:
            (scan / f.name).write_text(f.read_text())
        for rollout in source.kind("Rollout"):
            (scan / "rollout-pod-template-as-deployment.yaml").write_text(
                yaml.safe_dump(workload_as_deployment(rollout))
            )
        cmd = [
            str(CHECKOV),
            "-d",
            str(scan),
            "--framework",
            "kubernetes",
            "--skip-download",
            "--compact",
            "-o",
            "json",
        ]
        if name == "helm-default":
            cmd += ["--config-file", str(ROOT / "tests" / "deploy" / "checkov-helm-default.yaml")]
        procs[name] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reports = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert out.strip(), f"checkov printed nothing for {name}: {err}"
        report = json.loads(out)
        reports[name] = report[0] if isinstance(report, list) else report
    return reports


def test_checkov(source: Source, checkov_reports: dict[str, dict[str, Any]]) -> None:
    report = checkov_reports[source.name]
    summary = report["summary"]
    results = report["results"]
    failed = [(c["check_id"], c["check_name"], c["resource"]) for c in results.get("failed_checks", [])]
    assert summary["parsing_errors"] == 0, summary
    assert not failed, failed
    for c in results.get("skipped_checks", []):
        assert c["check_id"] in ALLOWED_SKIPS, f"unexpected skip {c['check_id']}"
        reason = c.get("check_result", {}).get("suppress_comment") or ""
        assert len(reason.strip()) > 20, f"skip of {c['check_id']} has no reason"
    workload_passed = {
        c["check_id"] for c in results.get("passed_checks", []) if "Deployment" in c["resource"]
    }
    assert workload_passed >= WORKLOAD_CHECKS, (
        f"not checked on the workload: {WORKLOAD_CHECKS - workload_passed}"
    )


# --- hardening and wiring, asserted directly ----------------------------------------------------------

WRITABLE_DIRS = {"/var/lib/rag-gateway", "/tmp", "/var/run/rag-gateway/prometheus"}


def _containers(template: dict[str, Any]) -> list[dict[str, Any]]:
    return template["spec"]["containers"]


def test_pods_are_hardened(source: Source) -> None:
    workloads = source.kind("Rollout") + source.kind("Deployment")
    assert len(workloads) == 1, f"{source.name}: one gateway workload expected"
    tpl = workloads[0]["spec"]["template"]
    pod = tpl["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True and isinstance(psc["runAsUser"], int) and psc["runAsUser"] > 0
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    for c in _containers(tpl):
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert sc["runAsNonRoot"] is True and isinstance(sc["runAsUser"], int)
        assert sc["seccompProfile"]["type"] == "RuntimeDefault"
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{kind} missing"
        assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["startupProbe"]["httpGet"]["path"] == "/livez"
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {"http": 8080}
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            assert c[probe]["httpGet"]["port"] in ("http", 8080)
        image = c["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and "/" not in tag, f"image not pinned by tag: {image}"
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        assert set(mounts) >= WRITABLE_DIRS, f"writable dirs not mounted: {WRITABLE_DIRS - set(mounts)}"
        for path in WRITABLE_DIRS:
            assert "emptyDir" in volumes[mounts[path]], f"{path} is not an emptyDir"
        for env in c.get("env", []):
            if env["name"] in ("RAG_REDIS__URL", "RAG_QDRANT__API_KEY"):
                assert "secretKeyRef" in env.get("valueFrom", {}), f"{env['name']} must come from a Secret"
    assert not source.kind("Secret"), "no Secret objects (and so no secret values) in the manifests"


def test_no_secret_values_inline(source: Source) -> None:
    text = "\n".join(f.read_text() for f in source.files)
    assert not re.search(r"redis://[^\s\"']*:[^\s\"'@]+@", text), "a Redis URL with a password is inline"
    for cm in source.kind("ConfigMap"):
        for key in cm.get("data", {}):
            assert not re.search(r"PASSWORD|API_KEY|TOKEN|SECRET", key), f"{key} belongs in a Secret"


def _steps(rollout: dict[str, Any]) -> list[str]:
    out = []
    for step in rollout["spec"]["strategy"]["canary"]["steps"]:
        ((kind, value),) = step.items()
        out.append(f"setWeight {value}" if kind == "setWeight" else kind)
    return out


@pytest.mark.parametrize("name", ["k8s", "helm-ci"])
def test_rollout_canary_wiring(sources: dict[str, Source], name: str) -> None:
    source = sources[name]
    (rollout,) = source.kind("Rollout")
    (template,) = source.kind("AnalysisTemplate")
    assert _steps(rollout) == ["setWeight 20", "pause", "analysis", "setWeight 60", "pause", "analysis"]
    canary = rollout["spec"]["strategy"]["canary"]
    services = {s["metadata"]["name"]: s for s in source.kind("Service")}
    assert canary["stableService"] in services and canary["canaryService"] in services
    assert canary["stableService"] != canary["canaryService"]
    ingresses = {i["metadata"]["name"]: i for i in source.kind("Ingress")}
    stable_ingress = ingresses[canary["trafficRouting"]["nginx"]["stableIngress"]]
    backend = stable_ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"]
    assert backend == canary["stableService"], "the stable Ingress must point at the stable Service"
    declared = template_arg_defaults(template)
    for step in canary["steps"]:
        if "analysis" not in step:
            continue
        assert [t["templateName"] for t in step["analysis"]["templates"]] == [template["metadata"]["name"]]
        passed = {a["name"]: a for a in step["analysis"].get("args", [])}
        assert set(passed) <= set(declared), (
            f"args the template does not declare: {set(passed) - set(declared)}"
        )
        missing = {n for n, v in declared.items() if v is None} - set(passed)
        assert not missing, f"template args without a value: {missing}"
        assert passed["canary-hash"]["valueFrom"] == {"podTemplateHashValue": "Latest"}
    used = set(re.findall(r"\{\{\s*args\.([\w-]+)\s*\}\}", json.dumps(template["spec"]["metrics"])))
    assert used <= set(declared), f"undeclared args used: {used - set(declared)}"
    for metric in template["spec"]["metrics"]:
        assert metric.get("failureLimit") is not None and "prometheus" in metric["provider"]
        assert (
            "isNaN(result[0])" in metric["successCondition"]
            and "len(result) == 0" in metric["successCondition"]
        )
    # the job the analysis reads is the Service the ServiceMonitor scrapes
    (monitor,) = source.kind("ServiceMonitor")
    job = declared["service-name"]
    scraped = [
        s
        for s in services.values()
        if all(
            s["metadata"]["labels"].get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items()
        )
    ]
    assert [s["metadata"]["name"] for s in scraped] == [job]
    assert "rollouts-pod-template-hash" in monitor["spec"]["podTargetLabels"]
    port_names = {p["name"] for p in scraped[0]["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names
    assert all(e["path"] == "/metrics" for e in monitor["spec"]["endpoints"])


@pytest.mark.parametrize("name", ["k8s", "helm-ci"])
def test_hpa_targets_the_rollout(sources: dict[str, Source], name: str) -> None:
    (hpa,) = sources[name].kind("HorizontalPodAutoscaler")
    (rollout,) = sources[name].kind("Rollout")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "name": rollout["metadata"]["name"],
    }
    assert hpa["spec"]["minReplicas"] > 1


def test_selectors_match_pods(source: Source) -> None:
    (workload,) = source.kind("Rollout") + source.kind("Deployment")
    pod_labels = workload["spec"]["template"]["metadata"]["labels"]
    assert all(pod_labels.get(k) == v for k, v in workload["spec"]["selector"]["matchLabels"].items())
    selectors = [s["spec"]["selector"] for s in source.kind("Service")]
    selectors += [p["spec"]["selector"]["matchLabels"] for p in source.kind("PodDisruptionBudget")]
    selectors += [n["spec"]["podSelector"]["matchLabels"] for n in source.kind("NetworkPolicy")]
    for sel in selectors:
        assert all(pod_labels.get(k) == v for k, v in sel.items()), f"{sel} selects no gateway pod"
    for svc in source.kind("Service"):
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in ("http", 8080)
    for np in source.kind("NetworkPolicy"):
        ports = {p["port"] for rule in np["spec"]["ingress"] for p in rule["ports"]}
        assert ports == {8080}
    sa = {s["metadata"]["name"] for s in source.kind("ServiceAccount")}
    assert workload["spec"]["template"]["spec"]["serviceAccountName"] in sa
    cms = {c["metadata"]["name"] for c in source.kind("ConfigMap")}
    for c in _containers(workload["spec"]["template"]):
        for ef in c.get("envFrom", []):
            assert ef["configMapRef"]["name"] in cms
    for doc in source.docs():
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, (
                f"{doc['kind']}/{doc['metadata']['name']} has no namespace"
            )
