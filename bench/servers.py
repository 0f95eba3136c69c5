"""Processes under test and their helpers: redis-server, the gateway (`python -m app`), the peers,
and a local OTLP/HTTP receiver that accepts spans and discards them.

Every process is started by the harness and stopped by it, by pid.
"""

from __future__ import annotations

import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A process listening on 127.0.0.1:`port`."""

    name: str
    kind: str  # gateway | floor | naive | redis
    port: int
    cmd: list[str]
    env: dict[str, str]
    log_path: Path
    info: dict[str, object] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.cmd, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_listening(self, timeout_s: float = 120.0) -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}; log:\n{self._log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"{self.name} not listening after {timeout_s:.0f}s; log:\n{self._log_tail()}")

    def post_rag(self, body: bytes, timeout_s: float = 30.0) -> bytes:
        req = urllib.request.Request(
            self.url + "/rag", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                data: bytes = resp.read()
                return data
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{self.name}: POST /rag answered {exc.code}: {exc.read()[:500]!r}") from exc

    def get_text(self, path: str, timeout_s: float = 10.0) -> str:
        with urllib.request.urlopen(self.url + path, timeout=timeout_s) as resp:
            text: str = resp.read().decode()
            return text

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "OTEL_"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    return env


def redis_server(workdir: Path) -> Server:
    port = free_port()
    exe = shutil.which("redis-server") or "redis-server"
    cmd = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    cmd += ["--dir", str(workdir), "--databases", "16"]
    return Server("redis", "redis", port, cmd, base_env(), workdir / "redis.log")


def gateway(
    name: str,
    qdrant_path: Path,
    model_dir: Path,
    redis_url: str,
    logdir: Path,
    otlp: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> Server:
    port = free_port()
    env = base_env()
    env.update(
        RAG_QDRANT__PATH=str(qdrant_path),
        RAG_EMBEDDER__MODEL_DIR=str(model_dir),
        RAG_REDIS__URL=redis_url,
        # every request runs the pipeline, unless `extra_env` turns the answer cache (the
        # product default) back on: the scenarios measure the work, CACHED measures the cache
        RAG_ANSWER_CACHE__ENABLED="false",
    )
    env.update(extra_env or {})
    if otlp:
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=otlp, OTEL_SERVICE_NAME="rag-gateway-bench")
    cmd = [sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", str(port)]
    return Server(name, "gateway", port, cmd, env, logdir / f"{name}.log")


def floor(body_file: Path, logdir: Path) -> Server:
    port = free_port()
    cmd = [sys.executable, "-m", "bench.peers.floor", "--port", str(port), "--body", str(body_file)]
    return Server("P0 floor", "floor", port, cmd, base_env(), logdir / "floor.log")


def naive(qdrant_path: Path, redis_url: str, logdir: Path) -> Server:
    port = free_port()
    cmd = [sys.executable, "-m", "bench.peers.naive", "--port", str(port)]
    cmd += ["--qdrant-path", str(qdrant_path), "--redis-url", redis_url]
    return Server("P1 naive", "naive", port, cmd, base_env(), logdir / "naive.log")


class OtlpSink:
    """An OTLP/HTTP receiver on 127.0.0.1 that answers every export with an empty success and
    counts what it was sent (so the report can show that spans really left the gateway)."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(n)
                sink.requests += 1
                sink.bytes += len(data)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return None

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-sink", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
