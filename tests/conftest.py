"""Shared fixtures: a real redis-server per session (killable, pausable), the exported ONNX model,
a small embedded Qdrant collection built once per session from the synthetic corpus, and a
factory that starts the app (lifespan included) behind an httpx client over ASGI."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# tracing stays off unless a test turns it on for its own app
for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
    os.environ.pop(var, None)

from app.settings import Settings  # noqa: E402

MODEL_DIR = Path(os.environ.get("RAG_EMBEDDER__MODEL_DIR", ROOT / "data/models/all-MiniLM-L6-v2"))
CORPUS_SIZE = 600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {port}")


@dataclass
class RedisServer:
    """A real redis-server on a free port that tests may kill, restart, pause and resume."""

    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--enable-debug-command",
                "local",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)

    def kill(self) -> None:
        if self.proc is not None:
            self.resume()
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: `make test` installs it")
    server = RedisServer(free_port(), tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A running, empty Redis (restarted if a previous test killed it)."""
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    redis_server.resume()
    redis_server.cli("FLUSHALL")
    return redis_server.url


@pytest.fixture(scope="session")
def model_dir() -> Path:
    if not (MODEL_DIR / "manifest.json").exists():
        subprocess.run(
            [sys.executable, str(ROOT / "scripts/export_onnx.py"), "--out", str(MODEL_DIR)], check=True
        )
    return MODEL_DIR


@pytest.fixture(scope="session")
def corpus() -> list[dict[str, Any]]:
    from synthetic_corpus import generate

    return generate(n=CORPUS_SIZE, seed=7)


@pytest.fixture(scope="session")
def built_collection(
    tmp_path_factory: pytest.TempPathFactory, model_dir: Path, corpus: list[dict[str, Any]]
) -> Path:
    """An embedded collection of the synthetic corpus (tenant `default`), built once."""
    base = tmp_path_factory.mktemp("qdrant-base")
    jsonl = base / "corpus.jsonl"
    import json

    jsonl.write_text("\n".join(json.dumps(p) for p in corpus) + "\n")
    env = {**os.environ, "RAG_QDRANT__PATH": str(base / "qdrant"), "RAG_EMBEDDER__MODEL_DIR": str(model_dir)}
    subprocess.run(
        [sys.executable, str(ROOT / "scripts/qdrant_bootstrap.py"), "--jsonl", str(jsonl)],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return base / "qdrant"


@pytest.fixture
def qdrant_path(built_collection: Path, tmp_path: Path) -> Path:
    """A private copy of the built collection: one embedded engine per directory."""
    dest = tmp_path / "qdrant"
    shutil.copytree(built_collection, dest)
    return dest


def make_settings(
    model_dir: Path, qdrant_path: Path, redis_url: str | None, **groups: dict[str, Any]
) -> Settings:
    """Settings for a test app; `groups` override whole groups' fields, e.g. reranker={...}."""
    base: dict[str, Any] = {
        "embedder": {"model_dir": model_dir},
        "qdrant": {"path": qdrant_path},
        "redis": {"url": redis_url},
    }
    for name, values in groups.items():
        base[name] = {**base.get(name, {}), **values}
    return Settings(**base)


@asynccontextmanager
async def running_app(settings: Settings, **kwargs: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """The app with its lifespan, and an httpx client talking to it over ASGI."""
    from app.main import create_app

    app = create_app(settings, **kwargs)
    async with LifespanManager(app, startup_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=30) as client:
            yield client, app
            await app.state.rag.pipeline.drain()


@pytest.fixture
def settings_factory(model_dir: Path, qdrant_path: Path, redis_url: str) -> Any:
    def factory(**groups: dict[str, Any]) -> Settings:
        return make_settings(model_dir, qdrant_path, redis_url, **groups)

    return factory


@pytest.fixture
async def client(settings_factory: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(settings_factory()) as (c, _):
        yield c


async def wait_for(predicate: Any, timeout: float = 5.0, interval: float = 0.02) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        await asyncio.sleep(interval)
    raise AssertionError("condition not met in time")
