"""The early answer path (app/api/answers.py): a /rag body answered before is answered again
before FastAPI parses it, and everything the handler path checks still holds there: auth, a
revoked key, the rate limit counted once, the media type, the X-Request-Timeout header, the
tenant, a bypass, and a write between two requests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from support.keys import make_key
from tenancy_support import assert_json_error, auth_settings, corpus, ingest, serve

ADMIN = make_key("admin-ea", "ops", admin=True)
ALICE = make_key("alice-ea", "t1", rate_limit=1000)
BOB = make_key("bob-ea", "t2", rate_limit=1000)
BODY = orjson.dumps({"q": "how do I keep a sourdough starter alive", "k": 5})
JSON = {"Content-Type": "application/json"}


def settings(model_dir: Path, path: Path, redis_url: str, keys: list[Any]) -> Any:
    return auth_settings(
        model_dir, path, redis_url, keys, answer_cache={"enabled": True}, auth={"rate_window_s": 60}
    )


@pytest.fixture
async def gateway(model_dir: Path, redis_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(settings(model_dir, tmp_path / "a", redis_url, [ADMIN, ALICE, BOB])) as (c, _):
        await ingest(c, ADMIN, "t1", corpus(20))
        await ingest(c, ADMIN, "t2", corpus(20, seed=5, suffix=" (t2)"))
        yield c


async def post(c: httpx.AsyncClient, key: Any, body: bytes = BODY, **headers: str) -> httpx.Response:
    return await c.post("/rag", content=body, headers={**JSON, **key.headers, **headers})


def served_by(r: httpx.Response) -> str:
    assert r.status_code == 200, r.text
    cache = r.headers["x-answer-cache"]
    if cache != "hit":
        return cache
    return "body" if 'desc="body"' in r.headers.get("server-timing", "") else "request"


async def test_the_same_bytes_are_answered_early_and_another_spelling_joins_them(
    gateway: httpx.AsyncClient,
) -> None:
    c = gateway
    first = await post(c, ALICE)
    again = await post(c, ALICE)
    assert [served_by(first), served_by(again)] == ["miss", "body"]
    assert again.json()["request_id"] == again.headers["x-request-id"] != first.json()["request_id"]
    assert again.json()["results"] == first.json()["results"]
    # equal request, other bytes: found by the handler under its canonical key, then stored
    # under its own bytes too
    spelled = orjson.dumps({"k": 5, "q": " how do I keep a sourdough starter alive ", "rerank": True})
    assert served_by(await post(c, ALICE, spelled)) == "request"
    assert served_by(await post(c, ALICE, spelled)) == "body"
    # another tenant with the same bytes never gets t1's answer
    bob = await post(c, BOB)
    assert served_by(bob) == "miss"
    assert {h["payload"]["tenant"] for h in bob.json()["results"]} == {"t2"}
    # a bypass and a per-request timeout go to the handler (which answers them itself)
    assert served_by(await post(c, ALICE, **{"Cache-Control": "no-cache"})) == "bypass"
    assert served_by(await post(c, ALICE, **{"X-Request-Timeout": "5"})) == "request"
    metrics = (await c.get("/metrics")).text
    assert "rag_answer_cache_hit_total 4.0" in metrics and "rag_answer_cache_miss_total 2.0" in metrics


async def test_every_check_of_the_handler_still_holds_for_a_cached_body(gateway: httpx.AsyncClient) -> None:
    c = gateway
    assert served_by(await post(c, ALICE)) == "miss"
    assert served_by(await post(c, ALICE)) == "body"
    assert_json_error(await c.post("/rag", content=BODY, headers=JSON), 401, "unauthorized")
    wrong = make_key("alice-ea", "t1")  # the same id, another token
    assert_json_error(await post(c, wrong), 401, "unauthorized")
    r = await c.post("/rag", content=BODY, headers={"Content-Type": "text/plain", **ALICE.headers})
    assert_json_error(r, 415, "unsupported_media_type")
    r = await post(c, ALICE, **{"X-Request-Timeout": "0"})
    assert r.status_code == 422, r.text
    # one request, one count against the rate limit, hit or not
    left = [int((await post(c, ALICE)).headers["x-ratelimit-remaining"]) for _ in range(3)]
    assert left == [left[0], left[0] - 1, left[0] - 2]


async def test_a_write_and_a_revoked_key_reach_the_early_path(
    model_dir: Path, redis_url: str, tmp_path: Path, gateway: httpx.AsyncClient
) -> None:
    c = gateway
    await post(c, ALICE)
    assert served_by(await post(c, ALICE)) == "body"
    new = {"id": "fresh", "text": "how do I keep a sourdough starter alive: feed it daily"}
    r = await c.post("/documents", json={"tenant": "t1", "documents": [new]}, headers=ADMIN.headers)
    assert r.status_code == 200, r.text
    after = await post(c, ALICE)
    assert served_by(after) == "miss"
    assert "fresh" in [h["payload"]["doc_id"] for h in after.json()["results"]]
    assert served_by(await post(c, ALICE)) == "body"

    # a replica sharing Redis where the key is revoked: the answer is there, the caller is not
    revoked = replace(ALICE, revoked=True)
    async with serve(settings(model_dir, tmp_path / "b", redis_url, [ADMIN, revoked])) as (other, _):
        assert_json_error(await post(other, ALICE), 401, "unauthorized")


async def test_a_repeated_header_is_read_as_the_handler_reads_it(gateway: httpx.AsyncClient) -> None:
    c = gateway
    assert served_by(await post(c, ALICE)) == "miss"
    assert served_by(await post(c, ALICE)) == "body"
    # the first of two Content-Types decides, on the early path as in the handler
    two_types = [("Content-Type", "text/plain"), ("Content-Type", "application/json")]
    r = await c.post(
        "/rag", content=BODY, headers=[*two_types, ("Authorization", ALICE.headers["Authorization"])]
    )
    assert_json_error(r, 415, "unsupported_media_type")
    # the first of two keys is the caller, hit or miss
    two_keys = [
        ("Authorization", BOB.headers["Authorization"]),
        ("Authorization", ALICE.headers["Authorization"]),
    ]
    for _ in range(2):
        r = await c.post("/rag", content=BODY, headers=[("Content-Type", "application/json"), *two_keys])
        assert r.status_code == 200, r.text
        assert {h["payload"]["tenant"] for h in r.json()["results"]} == {"t2"}
