"""Shared helpers of the deployment tests: paths, tool lookup, YAML loading, Helm rendering and
the PromQL sources (dashboard, alert rules, AnalysisTemplates) with their variables substituted.

Test modules in this folder are named test_deploy_*.py so they never collide with the
project's other test modules (this folder has no __init__.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.loadgen import hey_command

ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = ROOT / "k8s"
CHART_DIR = ROOT / "helm" / "rag-gateway"
CI_VALUES = CHART_DIR / "ci" / "ci-values.yaml"
DASHBOARD = ROOT / "dashboards" / "grafana-latency-dashboard.json"
ALERT_RULES = ROOT / "alerts" / "rag-gateway-rules.yml"
COMPOSE = ROOT / "docker" / "docker-compose.yml"
NODE_MODULES = ROOT / "node_modules"
CHECKOV = ROOT / ".tools" / "checkov" / "bin" / "checkov"
RELEASE = "rag-gateway"
NAMESPACE = "rag-gateway"

# Kinds that kubernetes-validate has schemas for are validated there; these are CRDs.
CRD_KINDS = {"Rollout", "AnalysisTemplate", "ServiceMonitor"}
NOT_K8S = {"kustomization.yaml"}


def venv_bin(name: str) -> str:
    """A console script of the running interpreter's venv, else one on PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise AssertionError(f"{name} not found: run `bash scripts/install_deploy_tools.sh`")
    return found


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise AssertionError(f"{name} not found: run `bash scripts/install_deploy_tools.sh`")
    return found


def run(
    cmd: list[str], *, cwd: Path | None = None, timeout: float = 120, **kw: Any
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd or ROOT, capture_output=True, text=True, timeout=timeout, check=False, **kw
    )


_HEY_RESPONSES = re.compile(r"^\s+\[(\d{3})\]\s+(\d+) responses", re.M)


def hey_rag(
    url: str, concurrency: int, duration_s: float = 10, headers: tuple[str, ...] = ()
) -> tuple[dict[str, str], str]:
    """`hey` POSTing one /rag query to `url` (bench's command line, plus `-H` per header): the
    count of answers by status code, and hey's report."""
    body = json.dumps({"q": "what causes inflation", "k": 50})
    cmd = hey_command(f"{url}/rag", duration_s, concurrency, body)
    for header in headers:
        cmd[1:1] = ["-H", header]
    proc = run(cmd, timeout=duration_s + 110)
    assert proc.returncode == 0, f"hey exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return dict(_HEY_RESPONSES.findall(proc.stdout)), proc.stdout


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def k8s_files() -> list[Path]:
    return sorted(p for p in K8S_DIR.glob("*.yaml") if p.name not in NOT_K8S)


def k8s_docs() -> list[dict[str, Any]]:
    return [d for p in k8s_files() for d in load_docs(p)]


def render_chart(values: dict[str, Any] | None) -> dict[str, str]:
    """Render the chart offline (Helm v4 SDK via helm-python-sdk): template path -> manifest."""
    import helm_python as helm

    with helm.Chart.load(str(CHART_DIR)) as chart:
        return chart.render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def lint_chart(values: dict[str, Any] | None) -> dict[str, Any]:
    import helm_python as helm

    return helm.lint(str(CHART_DIR), values, strict=True, namespace=NAMESPACE)


VALUE_SETS: dict[str, Path | None] = {"helm-default": None, "helm-ci": CI_VALUES}


def values_for(name: str) -> dict[str, Any] | None:
    path = VALUE_SETS[name]
    return None if path is None else yaml.safe_load(path.read_text())


@dataclass
class Source:
    """One set of Kubernetes manifests: k8s/ or a Helm rendering, written out as files."""

    name: str
    files: list[Path]

    def docs(self) -> list[dict[str, Any]]:
        return [d for p in self.files for d in load_docs(p)]

    def kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs() if d.get("kind") == kind]


def write_rendered(name: str, out_dir: Path) -> Source:
    manifests = render_chart(values_for(name))
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for template, text in sorted(manifests.items()):
        if not template.endswith((".yaml", ".yml")) or not text.strip():
            continue
        docs = [d for d in yaml.safe_load_all(text) if d]
        if not docs:
            continue
        path = out_dir / Path(template).name
        path.write_text(text)
        files.append(path)
    return Source(name, files)


def workload_as_deployment(rollout: dict[str, Any]) -> dict[str, Any]:
    """The Rollout's pod template inside a Deployment, so schema validators and checkov (which
    do not know the Rollout CRD) check the pod spec too."""
    spec = rollout["spec"]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": rollout["metadata"],
        "spec": {
            "replicas": spec.get("replicas", 1),
            "selector": spec["selector"],
            "template": spec["template"],
        },
    }


def pod_specs(source: Source) -> Iterator[tuple[str, dict[str, Any]]]:
    for kind in ("Rollout", "Deployment"):
        for doc in source.kind(kind):
            yield f"{source.name}:{kind}/{doc['metadata']['name']}", doc["spec"]["template"]


# --- PromQL sources -----------------------------------------------------------------------------

GRAFANA_VARS = {
    # the job variable's "All" value (allValue) and the rate interval Grafana would pick
    "$__rate_interval": "2m",
    "${__rate_interval}": "2m",
    "$__interval": "1m",
    "$job": ".+",
    "${job}": ".+",
}


def substitute_grafana(expr: str, variables: dict[str, str] | None = None) -> str:
    variables = {**GRAFANA_VARS, **(variables or {})}
    for key in sorted(variables, key=len, reverse=True):
        expr = expr.replace(key, variables[key])
    leftover = re.findall(r"\$\{?\w+", expr)
    assert not leftover, f"unsubstituted Grafana variables {leftover} in {expr}"
    return expr


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title / refId, raw expression) for every Prometheus target of the dashboard."""
    out = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            if "expr" in target:
                out.append((f"{panel['title']} [{target['refId']}]", target["expr"]))
    return out


def alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERT_RULES.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


ARG_RE = re.compile(r"\{\{\s*args\.([\w-]+)\s*\}\}")


def template_arg_defaults(template: dict[str, Any]) -> dict[str, str | None]:
    return {a["name"]: a.get("value") for a in template["spec"].get("args", [])}


def substitute_args(text: str, args: dict[str, str]) -> str:
    def repl(m: re.Match[str]) -> str:
        name = m.group(1)
        assert name in args, f"argument {name} has no value"
        return str(args[name])

    return ARG_RE.sub(repl, text)


def analysis_templates(source: Source) -> list[dict[str, Any]]:
    return source.kind("AnalysisTemplate")


def analysis_metrics(template: dict[str, Any], overrides: dict[str, str]) -> list[dict[str, str]]:
    """Each Prometheus metric of an AnalysisTemplate with its {{args.x}} substituted: the
    template's defaults, then `overrides` (what the Rollout passes, e.g. the canary hash)."""
    args = {k: v for k, v in template_arg_defaults(template).items() if v is not None}
    args.update(overrides)
    out = []
    for metric in template["spec"]["metrics"]:
        prom = metric["provider"]["prometheus"]
        out.append(
            {
                "name": metric["name"],
                "query": substitute_args(prom["query"], args).strip(),
                "successCondition": substitute_args(metric["successCondition"], args),
                "address": substitute_args(prom["address"], args),
            }
        )
    return out


# --- Argo Rollouts successCondition (expr-lang) ---------------------------------------------------

_EXPR_TOKEN = re.compile(
    r"\s*(\|\||&&|<=|>=|==|!=|<|>|\(|\)|\[|\]|!|len|isNaN|result|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
)


def eval_success_condition(condition: str, result: list[float]) -> bool:
    """Evaluate an Argo Rollouts successCondition over a Prometheus vector result.

    Only the subset the templates use is accepted (len, isNaN, result[i], comparisons, ||, &&,
    !, parentheses, numbers); anything else is an error rather than a silent pass.
    """
    import math

    condition = condition.strip()
    pos, py = 0, []
    while pos < len(condition):
        m = _EXPR_TOKEN.match(condition, pos)
        if not m:
            raise ValueError(f"unsupported successCondition syntax at {condition[pos:]!r}")
        tok = m.group(1)
        py.append({"||": " or ", "&&": " and ", "!": " not "}.get(tok, tok))
        pos = m.end()
    code = "".join(py)
    return bool(eval(code, {"__builtins__": {}}, {"len": len, "isNaN": math.isnan, "result": result}))


def make_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("NO_COLOR", "1")
    return env


# --- TypeScript type checks ------------------------------------------------------------------------


def typecheck(sources: dict[str, str]) -> tuple[int, str]:
    """`tsc --noEmit` over generated .mts files (name -> text) with tests/deploy/tsconfig.base.json.

    The files live in a scratch folder under node_modules/ (gitignored) so that module
    resolution finds the installed type packages."""
    import tempfile

    cache = NODE_MODULES / ".cache"
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="deploy-tests-", dir=cache) as tmp:
        d = Path(tmp)
        config = json.loads((Path(__file__).parent / "tsconfig.base.json").read_text())
        config["files"] = sorted(sources)
        (d / "tsconfig.json").write_text(json.dumps(config))
        for name, text in sources.items():
            (d / name).write_text(text)
        proc = run(
            ["node", str(NODE_MODULES / "typescript" / "bin" / "tsc"), "-p", str(d / "tsconfig.json")],
            cwd=d,
            timeout=300,
        )
        return proc.returncode, (proc.stdout + proc.stderr).replace(str(d) + "/", "")


def ts_literal(obj: Any) -> str:
    """A JSON value as a TypeScript object literal (fresh literal: excess properties are errors)."""
    return json.dumps(obj, indent=2)
