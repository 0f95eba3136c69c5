"""Shared fixtures: a real redis-server per session (killable, pausable), the exported ONNX model,
a small embedded Qdrant collection built once per session from the synthetic corpus, and a
factory that starts the app (lifespan included) behind an httpx client over ASGI. The helpers
behind them live in the `support` package (tests/support/).

The checkout under test comes first on the import path, for this process and for the processes
the tests start (`python -m app`, the scripts): an editable install of another checkout sharing
the virtualenv must not stand in for it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# tracing stays off unless a test turns it on for its own app
for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
    os.environ.pop(var, None)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)

from support.app import make_settings, running_app  # noqa: E402
from support.net import free_port  # noqa: E402
from support.paths import MODEL_DIR  # noqa: E402
from support.redis import RedisServer  # noqa: E402

from app.clients.vectorstore.files import copy_tree  # noqa: E402
from app.settings import Settings  # noqa: E402

CORPUS_SIZE = 600


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
    from app.corpus import generate

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
    copy_tree(built_collection, dest)
    return dest


@pytest.fixture
def settings_factory(model_dir: Path, qdrant_path: Path, redis_url: str) -> Any:
    def factory(**groups: dict[str, Any]) -> Settings:
        return make_settings(model_dir, qdrant_path, redis_url, **groups)

    return factory


@pytest.fixture
async def client(settings_factory: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(settings_factory()) as (c, _):
        yield c
