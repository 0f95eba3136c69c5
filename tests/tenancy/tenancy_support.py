"""Helpers of the tenancy tests: API keys made the way operators make them (scripts/hash_api_key.py's
code, a cheap scrypt cost), settings with auth on, and the app behind an httpx client over ASGI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

from app.apikeys import hash_token, new_token
from app.settings import Settings

TEST_SCRYPT_N = 2**10  # the production default is 2**14; the format and the checks are the same


@dataclass(frozen=True)
class Key:
    id: str
    tenant: str
    token: str
    admin: bool = False
    revoked: bool = False
    rate_limit: int | None = None

    def entry(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "tenant": self.tenant,
            "hash": hash_token(self.token, n=TEST_SCRYPT_N),
            "admin": self.admin,
            "revoked": self.revoked,
        }
        if self.rate_limit is not None:
            out["rate_limit"] = self.rate_limit
        return out

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def make_key(key_id: str, tenant: str, **kw: Any) -> Key:
    return Key(key_id, tenant, new_token(key_id), **kw)


def auth_settings(
    model_dir: Path,
    qdrant_path: Path,
    redis_url: str | None,
    keys: list[Key],
    **groups: dict[str, Any],
) -> Settings:
    base: dict[str, Any] = {
        "embedder": {"model_dir": model_dir},
        "qdrant": {"path": qdrant_path},
        # generous bounds: a loaded test machine must not turn a slow answer into a fallback
        "redis": {"url": redis_url, "timeout_s": 1.0, "connect_timeout_s": 1.0},
        "auth": {"keys": [k.entry() for k in keys]},
    }
    for name, values in groups.items():
        base[name] = {**base.get(name, {}), **values}
    return Settings(**base)


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """The app with its lifespan, and an httpx client talking to it over ASGI."""
    from app.main import create_app

    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=30) as client:
            yield client, app
            await app.state.rag.pipeline.drain()


def corpus(n: int, seed: int = 11, suffix: str = "") -> list[dict[str, Any]]:
    """`n` synthetic passages as POST /documents items; `suffix` makes a tenant's variant."""
    from synthetic_corpus import generate

    docs = []
    for p in generate(n=n, seed=seed):
        docs.append({"id": p["id"], "text": p["text"] + suffix, "topic": p["topic"], "source": p["source"]})
    return docs


async def ingest(client: httpx.AsyncClient, admin: Key, tenant: str, docs: list[dict[str, Any]]) -> None:
    for i in range(0, len(docs), 100):
        r = await client.post(
            "/documents", json={"tenant": tenant, "documents": docs[i : i + 100]}, headers=admin.headers
        )
        assert r.status_code == 200, r.text
        assert r.json()["upserted"] == len(docs[i : i + 100])


def assert_json_error(r: httpx.Response, status: int, type_: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err: dict[str, Any] = r.json()["error"]
    assert err["type"] == type_
    assert err["request_id"] == r.headers["x-request-id"]
    return err
