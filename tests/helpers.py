"""Helpers shared by the tests (imported as `helpers`; fixtures live in conftest.py): free ports,
a real redis-server the tests can kill, pause and restart, test settings, and the app running
with its lifespan behind an httpx client over ASGI."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "scripts") not in sys.path:
    sys.path.insert(0, str(ROOT / "scripts"))

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


async def wait_for(predicate: Any, timeout: float = 5.0, interval: float = 0.02) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        await asyncio.sleep(interval)
    raise AssertionError("condition not met in time")
