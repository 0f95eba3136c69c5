"""The deployment files agree with the code: every RAG_* variable they set is a real setting of
app/settings.py (and the values validate), the gateway port is 8080 everywhere, and every host
in a URL of the compose stack is one of its services, on a port that service listens on."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from deploy_support import CI_VALUES, COMPOSE, K8S_DIR, ROOT, Source, load_docs
from pydantic import BaseModel

OTEL_NAMES = {
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_SDK_DISABLED",
}
# Other variables the image or the scripts read (app/__main__.py, scripts/export_onnx.py, Python).
OTHER_NAMES = {
    "PORT",
    "DATA_DIR",
    "PATH",
    "PYTHONPATH",
    "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
}
GATEWAY_PORT = 8080


def setting_env_names() -> set[str]:
    """RAG_<GROUP>__<FIELD> for every field of every settings group (plus top-level fields)."""
    from app.settings import Settings

    names = set()
    for group, info in Settings.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            names |= {f"RAG_{group}__{field}".upper() for field in ann.model_fields}
        else:
            names.add(f"RAG_{group}".upper())
    return names


def test_settings_walk_finds_the_known_names() -> None:
    names = setting_env_names()
    assert {
        "RAG_QDRANT__URL",
        "RAG_REDIS__URL",
        "RAG_RERANKER__KIND",
        "RAG_RERANKER__URL",
        "RAG_EMBEDDER__MODEL_DIR",
    } <= names
    assert "RAG_QDRANT__URLS" not in names


# --- where the deployment files set environment variables ----------------------------------------

_INTERP = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def _compose_value(value: Any) -> str:
    """Compose interpolation with the defaults (`${X:-default}`), as `docker compose config` would."""
    return _INTERP.sub(lambda m: m.group(2) or "", str(value))


def compose_envs() -> dict[str, dict[str, str]]:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    return {
        name: {k: _compose_value(v) for k, v in (svc.get("environment") or {}).items()}
        for name, svc in services.items()
    }


def dockerfile_env() -> dict[str, str]:
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    runtime = text.split("AS runtime", 1)[1]
    env: dict[str, str] = {}
    for line in runtime.splitlines():
        if line.startswith("ENV "):
            env.update(re.findall(r"(\w+)=(\S+)", line))
    return env


def workload_env(docs: list[dict[str, Any]]) -> dict[str, str | None]:
    env: dict[str, str | None] = {}
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            env.update(doc.get("data", {}))
        if doc["kind"] in ("Rollout", "Deployment"):
            for c in doc["spec"]["template"]["spec"]["containers"]:
                for e in c.get("env", []):
                    env[e["name"]] = e.get("value")  # None: from a Secret
    return env


def env_sets(sources: dict[str, Source]) -> dict[str, dict[str, str | None]]:
    sets: dict[str, dict[str, str | None]] = {f"compose:{n}": dict(e) for n, e in compose_envs().items()}
    sets["Dockerfile"] = dict(dockerfile_env())
    sets["k8s"] = workload_env([d for p in sorted(K8S_DIR.glob("*.yaml")) for d in load_docs(p)])
    for name in ("helm-default", "helm-ci"):
        sets[name] = workload_env(sources[name].docs())
    values = yaml.safe_load((ROOT / "helm" / "rag-gateway" / "values.yaml").read_text())
    ci = yaml.safe_load(CI_VALUES.read_text())
    sets["helm values.yaml"] = {**values["config"], **dict.fromkeys(values["secretEnv"])}
    sets["helm ci-values.yaml"] = dict(ci.get("config", {}))
    return sets


def test_every_env_name_is_a_setting(sources: dict[str, Source]) -> None:
    settings = setting_env_names()
    unknown = []
    for where, env in env_sets(sources).items():
        for name in env:
            if name.startswith("RAG_"):
                if name not in settings:
                    unknown.append(f"{where}: {name}")
            elif name.startswith("OTEL_"):
                if name not in OTEL_NAMES:
                    unknown.append(f"{where}: {name} (not an OTEL_* variable the SDK reads)")
            elif not name.startswith("GF_") and name not in OTHER_NAMES:
                unknown.append(f"{where}: {name}")
    assert not unknown, "\n".join(unknown)


def test_a_misspelt_name_would_be_caught() -> None:
    assert "RAG_QDRANT_URL" not in setting_env_names()  # one underscore: not a nested setting
    assert "RAG_RERANKER__ENDPOINT" not in setting_env_names()


@pytest.mark.parametrize(
    "where", ["compose:gateway", "compose:bootstrap", "Dockerfile", "k8s", "helm-default", "helm-ci"]
)
def test_env_values_validate(sources: dict[str, Source], where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.settings import Settings

    env = env_sets(sources)[where]
    if where.startswith("compose:"):
        env = {**dockerfile_env(), **env}  # the compose services run the image
    for name in list(__import__("os").environ):
        if name.startswith("RAG_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("RAG_"):
            # values from Secrets are unknown here; any well-formed value will do
            monkeypatch.setenv(name, value if value is not None else "redis://redis:6379/0")
    settings = Settings()
    assert settings.server.port == GATEWAY_PORT


def test_gateway_port_is_8080_everywhere(sources: dict[str, Source]) -> None:
    from app.settings import Settings

    assert Settings.model_fields["server"].default.port == GATEWAY_PORT
    docker = (ROOT / "Dockerfile").read_text()
    assert f"EXPOSE {GATEWAY_PORT}" in docker and f'"--port", "{GATEWAY_PORT}"' in docker
    assert f"127.0.0.1:{GATEWAY_PORT}/livez" in docker
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert services["gateway"]["ports"] == [f"{GATEWAY_PORT}:{GATEWAY_PORT}"]
    prom = yaml.safe_load((ROOT / "docker" / "prometheus.yml").read_text())
    gw_targets = [
        t
        for j in prom["scrape_configs"]
        if j["job_name"] == "rag-gateway"
        for s in j["static_configs"]
        for t in s["targets"]
    ]
    assert gw_targets == [f"gateway:{GATEWAY_PORT}"]
    for source in sources.values():
        for doc in source.kind("Rollout") + source.kind("Deployment"):
            for c in doc["spec"]["template"]["spec"]["containers"]:
                assert [p["containerPort"] for p in c["ports"]] == [GATEWAY_PORT]
                if "command" in c:
                    assert c["command"][-2:] == ["--port", str(GATEWAY_PORT)]
        for cm in source.kind("ConfigMap"):
            assert cm["data"].get("RAG_SERVER__PORT", str(GATEWAY_PORT)) == str(GATEWAY_PORT)
        for svc in source.kind("Service"):
            assert [p["port"] for p in svc["spec"]["ports"]] == [GATEWAY_PORT]


def _container_ports(svc: dict[str, Any]) -> set[int]:
    ports = set()
    for p in svc.get("ports", []):
        ports.add(int(str(p).split(":")[-1].split("/")[0]))
    return ports


# Ports an image listens on without publishing them (none are needed today).
IMPLICIT_PORTS: dict[str, set[int]] = {}
DEFAULT_PORTS = {"http": 80, "https": 443, "redis": 6379}


def urls_in(value: str) -> list[str]:
    return re.findall(r"\b(?:https?|redis)://[^\s\"',]+", value)


def test_compose_urls_point_at_compose_services() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    found = []
    for name, env in compose_envs().items():
        for key, value in env.items():
            found += [(f"{name}.{key}", u) for u in urls_in(value)]
    prom = yaml.safe_load((ROOT / "docker" / "prometheus.yml").read_text())
    for job in prom["scrape_configs"]:
        if job["job_name"] == "prometheus":
            continue
        for sc in job["static_configs"]:
            found += [(f"prometheus.{job['job_name']}", f"http://{t}") for t in sc["targets"]]
    ds = yaml.safe_load(
        (COMPOSE.parent / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    found += [(f"grafana datasource {d['name']}", d["url"]) for d in ds["datasources"]]
    assert len(found) >= 6
    bad = []
    for where, url in found:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port or DEFAULT_PORTS[parts.scheme]
        if host not in services:
            bad.append(f"{where}: {url}: no compose service {host}")
        elif port not in _container_ports(services[host]) | IMPLICIT_PORTS.get(host, set()):
            bad.append(f"{where}: {url}: {host} does not listen on {port}")
    assert not bad, "\n".join(bad)


def test_compose_service_names_used_by_the_gateway() -> None:
    env = compose_envs()["gateway"]
    hosts = {urlsplit(u).hostname for v in env.values() for u in urls_in(v)}
    assert {"qdrant", "redis", "otel-collector", "tei-reranker"} <= hosts


def test_runbook_and_compose_use_the_same_commands() -> None:
    runbook = (ROOT / "RUNBOOK.md").read_text()
    assert "docker compose -f docker/docker-compose.yml up -d --build" in runbook
    assert 'hey -z 30s -c 20 -m POST -d \'{"q":"test","k":50}\' http://localhost:8080/rag' in runbook
    assert (ROOT / "scripts" / "qdrant_bootstrap.py").exists(), (
        "the bootstrap service runs scripts/qdrant_bootstrap.py"
    )
    assert Path(ROOT / "scripts" / "export_onnx.py").exists()
