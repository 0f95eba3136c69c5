"""The image built with podman and run as the Dockerfile says (`make test-container`).

Built by scripts/container_build.sh (local Debian base image and host-made wheelhouse, both
cached), then run non-root, `--read-only` with only the documented writable paths mounted
(the data volume, /tmp and the Prometheus multiprocess directory), `--cap-drop ALL`, runc and
explicit ulimits. The image's own HEALTHCHECK must report healthy; the collection is
bootstrapped inside the container with the image's script, and the gateway answers /readyz,
/rag and /metrics and a 10 s `hey` run through the published port without a non-2xx answer.

Skipped, with the reason, only where containers cannot run at all: podman missing and not
installable, or podman unable to start even the base image. Marked `container`: `make pytest`
leaves it out and `make test-container` (part of `make test`) runs it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from deploy_support import ROOT, hey_rag
from support.net import free_port

pytestmark = pytest.mark.container

IMAGE = "localhost/rag-gateway:dev"  # the tag docker/docker-compose.yml runs
UID = "10001:10001"
# The Dockerfile's VOLUME paths: the only places the app may write.
DATA_DIR = "/var/lib/rag-gateway"
PROM_DIR = "/var/run/rag-gateway/prometheus"
# runc: crun cannot run where cgroups are hybrid; explicit ulimits: the defaults fail where
# raising limits is not permitted
RUN = ["podman", "--runtime", "runc", "run", "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"]
CORPUS = 300  # synthetic passages: enough for k=50 candidates, quick to embed on 2 cores


def sh(*cmd: str, timeout: float = 120, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(cmd), cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False, **kw
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def script(name: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    import sys

    env = {**os.environ, "PYTHON": sys.executable}
    return sh("bash", str(ROOT / "scripts" / name), *args, timeout=timeout, check=False, env=env)


def containers_can_run() -> str:
    """The base image's name; skips the module (saying why) where containers cannot run."""
    need = sh("bash", "-c", "source scripts/container_common.sh && need_podman", check=False, timeout=600)
    if need.returncode != 0 and sh("bash", "-c", "command -v podman", check=False).returncode != 0:
        pytest.skip(
            f"containers cannot run: podman is missing and could not be installed: {need.stderr[-500:]}"
        )
    info = sh("podman", "info", check=False)
    if info.returncode != 0:
        pytest.skip(f"containers cannot run: `podman info` fails: {info.stderr[-500:]}")
    base = script("container_base.sh", timeout=900)
    assert base.returncode == 0, base.stderr[-3000:]
    image = base.stdout.strip().splitlines()[-1]
    probe = sh(*RUN, "--rm", image, "true", check=False)
    if probe.returncode != 0:
        pytest.skip(f"containers cannot run: podman cannot start the base image: {probe.stderr[-500:]}")
    return image


@dataclass
class Running:
    name: str
    url: str

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        req = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def health(self) -> str:
        out = sh("podman", "inspect", "--format", "{{.State.Health.Status}}", self.name)
        return out.stdout.strip()

    def wait_healthy(self, within_s: float = 120) -> None:
        """Run the image's HEALTHCHECK (podman schedules it with systemd timers, which a host
        without systemd lacks, so it is triggered here) until podman records `healthy`."""
        end = time.monotonic() + within_s
        while True:
            sh("podman", "healthcheck", "run", self.name, check=False)
            if self.health() == "healthy":
                return
            state = sh("podman", "inspect", "--format", "{{.State.Status}}", self.name).stdout.strip()
            if state != "running" or time.monotonic() > end:
                logs = sh("podman", "logs", self.name, check=False)
                raise AssertionError(f"container {state}, health {self.health()!r}:\n{logs.stdout[-3000:]}")
            time.sleep(1)


@pytest.fixture(scope="module")
def image() -> str:
    containers_can_run()
    start = time.monotonic()
    built = script("container_build.sh", IMAGE, timeout=1800)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    print(f"image built in {time.monotonic() - start:.0f} s: {built.stderr.strip().splitlines()[-1]}")
    return IMAGE


@pytest.fixture(scope="module")
def gateway(image: str) -> Iterator[Running]:
    name = f"rag-gateway-test-{os.getpid()}"
    volume = f"{name}-data"
    port = free_port()
    sh("podman", "volume", "create", volume)
    try:
        sh(
            *RUN, "-d", "--name", name,
            "--read-only", "--read-only-tmpfs=false",
            "-v", f"{volume}:{DATA_DIR}", "--tmpfs", "/tmp",
            "--mount", f"type=tmpfs,destination={PROM_DIR},U=true",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            # one container, no Redis beside it: the cache is off (the compose test covers Redis)
            "-e", "RAG_REDIS__URL=",
            "-p", f"127.0.0.1:{port}:8080", image,
        )  # fmt: skip
        yield Running(name, f"http://127.0.0.1:{port}")
    finally:
        sh("podman", "rm", "-f", "-t", "5", name, check=False)
        sh("podman", "volume", "rm", "-f", volume, check=False)


@pytest.fixture(scope="module")
def bootstrapped(gateway: Running) -> Running:
    gateway.wait_healthy()
    # The embedded engine belongs to one process: bootstrap inside the container, then restart
    # the gateway so it opens the collection (the data volume keeps it across the restart).
    boot = sh(
        "podman", "exec", gateway.name, "python", "scripts/qdrant_bootstrap.py", "--n", str(CORPUS),
        timeout=600,
    )  # fmt: skip
    info = json.loads(boot.stdout[boot.stdout.index("{") :])
    assert info["result"]["points_count"] == CORPUS, info
    sh("podman", "restart", "-t", "10", gateway.name, timeout=60)
    gateway.wait_healthy()
    return gateway


def test_image_is_non_root_without_torch_or_compiler(image: str) -> None:
    cfg = json.loads(sh("podman", "image", "inspect", "--format", "{{json .Config}}", image).stdout)
    assert cfg["User"] == UID
    assert {DATA_DIR, "/tmp", PROM_DIR} <= set(cfg["Volumes"])
    hc = json.loads(sh("podman", "image", "inspect", "--format", "{{json .HealthCheck}}", image).stdout)
    assert hc["Test"][:3] == ["CMD", "python", "-c"] and "/livez" in hc["Test"][3]
    probe = (
        "import importlib.util as u, shutil, os; "
        "print(os.getuid(), u.find_spec('torch') is None, u.find_spec('transformers') is None, "
        "[c for c in ('gcc', 'cc', 'g++', 'clang') if shutil.which(c)])"
    )
    # --image-volume tmpfs: no anonymous volumes for the image's VOLUMEs left by this probe
    out = sh(*RUN, "--rm", "--read-only", "--image-volume", "tmpfs", image, "python", "-c", probe)
    assert out.stdout.split() == ["10001", "True", "True", "[]"], out.stdout


def test_the_container_runs_read_only_as_non_root(gateway: Running) -> None:
    gateway.wait_healthy()
    who = sh("podman", "exec", gateway.name, "id", "-u").stdout.strip()
    assert who == "10001"
    ro = sh("podman", "exec", gateway.name, "touch", "/srv/rag-gateway/x", check=False)
    assert ro.returncode != 0 and "Read-only file system" in ro.stderr
    for path in (DATA_DIR, "/tmp", PROM_DIR):
        sh("podman", "exec", gateway.name, "touch", f"{path}/.writable")
    caps = sh("podman", "exec", gateway.name, "grep", "CapEff", "/proc/self/status").stdout
    assert caps.split()[-1] == "0000000000000000"


def test_readyz_rag_and_metrics(bootstrapped: Running) -> None:
    status, body = bootstrapped.get("/readyz")
    ready = json.loads(body)
    assert status == 200 and {"embedder", "qdrant"} <= set(ready["ok"]), ready
    status, answer = bootstrapped.post("/rag", {"q": "how do vaccines train the immune system", "k": 50})
    assert status == 200, answer
    assert len(answer["results"]) >= 5 and not answer.get("degraded"), answer
    status, metrics = bootstrapped.get("/metrics")
    text = metrics.decode()
    served = r'^http_server_request_duration_seconds_count\{[^}]*route="/rag"[^}]*status="200"[^}]*\} [1-9]'
    assert status == 200 and re.search(served, text, re.M), text[:3000]


def test_hey_through_the_published_port(bootstrapped: Running) -> None:
    codes, out = hey_rag(bootstrapped.url, concurrency=20)
    assert codes and set(codes) == {"200"}, out
    assert int(codes["200"]) > 20, out
    assert "Error distribution" not in out, out
    print("hey -z 10s -c 20 /rag:", " ".join(re.findall(r"(Requests/sec:\s+\S+|95% in \S+ secs)", out)))
