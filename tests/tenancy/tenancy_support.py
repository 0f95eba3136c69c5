"""Helpers of the tenancy tests: settings with auth on (keys from support.keys), the app behind an
httpx client over ASGI, a tenant's corpus and its ingestion, and the JSON error check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from support.app import Groups, make_settings, merge_groups, running_app
from support.keys import Key

from app.settings import Settings


def auth_settings(
    model_dir: Path,
    qdrant_path: Path,
    redis_url: str | None,
    keys: list[Key],
    **groups: dict[str, Any],
) -> Settings:
    # generous Redis bounds: a loaded test machine must not turn a slow answer into a fallback
    base: Groups = {
        "redis": {"timeout_s": 1.0, "connect_timeout_s": 1.0},
        "auth": {"keys": [k.entry() for k in keys]},
    }
    return make_settings(model_dir, qdrant_path, redis_url, **merge_groups(base, groups))


serve = running_app  # the app with its lifespan, and an httpx client talking to it over ASGI


def corpus(n: int, seed: int = 11, suffix: str = "") -> list[dict[str, Any]]:
    """`n` synthetic passages as POST /documents items; `suffix` makes a tenant's variant."""
    from app.corpus import generate

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
