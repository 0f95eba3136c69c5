"""A gateway process per hostile-client test module (every test leaves it as it found it: breakers
closed, nothing in flight; stopped when the module is done), and an httpx client to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hostile_support import Gateway, start_gateway
from support.net import free_port

from app.clients.vectorstore.files import copy_tree


@pytest.fixture(scope="module")
def gateway(
    model_dir: Path, built_collection: Path, redis_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    base = tmp_path_factory.mktemp("hostile")
    qdrant = base / "qdrant"
    copy_tree(built_collection, qdrant)
    gw = start_gateway(
        free_port(),
        {
            "RAG_EMBEDDER__MODEL_DIR": str(model_dir),
            "RAG_QDRANT__PATH": str(qdrant),
            "RAG_REDIS__URL": redis_server.url,
        },
        base / "gateway.log",
    )
    yield gw
    gw.stop()


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as c:
        yield c
