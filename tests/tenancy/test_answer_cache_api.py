"""The answer cache through /rag with a real Redis: a repeated request is a hit with its own
request id; a write changes the very next answer, in this process and in another one sharing
Redis; tenants never share answers; auth and the rate limit run before any hit; a client can
bypass it; a degraded answer is never cached."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.keys import make_key
from tenancy_support import assert_json_error, auth_settings, corpus, ingest, serve

ADMIN = make_key("admin-ac", "ops", admin=True)
ALICE = make_key("alice-ac", "t1", rate_limit=1000)
BOB = make_key("bob-ac", "t2", rate_limit=1000)
TIGHT = make_key("tight-ac", "t1", rate_limit=3)
KEYS = [ADMIN, ALICE, BOB, TIGHT]
QUERY = {"q": "how do I keep a sourdough starter alive", "k": 5}


def settings(model_dir: Path, path: Path, redis_url: str) -> Any:
    return auth_settings(
        model_dir, path, redis_url, KEYS, answer_cache={"enabled": True}, auth={"rate_window_s": 60}
    )


@pytest.fixture
async def pair(
    model_dir: Path, redis_url: str, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """Two gateways (replicas) sharing one Redis, each with its own embedded store."""
    async with (
        serve(settings(model_dir, tmp_path / "a", redis_url)) as (a, _),
        serve(settings(model_dir, tmp_path / "b", redis_url)) as (b, _),
    ):
        for c in (a, b):
            await ingest(c, ADMIN, "t1", corpus(20))
            await ingest(c, ADMIN, "t2", corpus(20, seed=5, suffix=" (t2)"))
        yield a, b


async def ask(c: httpx.AsyncClient, key: Any, **kw: Any) -> httpx.Response:
    r = await c.post("/rag", json={**QUERY, **kw.pop("body", {})}, headers={**key.headers, **kw})
    return r


async def test_a_repeat_is_a_hit_with_its_own_request_id(
    pair: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    a, _ = pair
    first = await ask(a, ALICE)
    second = await ask(a, ALICE)
    assert first.status_code == second.status_code == 200, second.text
    assert (first.headers["x-answer-cache"], second.headers["x-answer-cache"]) == ("miss", "hit")
    assert second.json()["request_id"] == second.headers["x-request-id"] != first.json()["request_id"]
    assert {k: v for k, v in second.json().items() if k != "request_id"} == {
        k: v for k, v in first.json().items() if k != "request_id"
    }
    assert second.headers["server-timing"].startswith("cache;dur=")
    # the same request in another spelling is the same answer: defaults applied, filters ordered
    spelled = await ask(a, ALICE, body={"top_n": 5, "rerank": True, "q": "  " + QUERY["q"] + " "})
    assert spelled.headers["x-answer-cache"] == "hit"
    # a client's own request id with quotes: the cached answer and every later hit stay JSON
    quoted = 'my "id" \\ here'
    hit = await ask(a, ALICE, **{"X-Request-ID": quoted})
    assert hit.headers["x-answer-cache"] == "hit" and hit.json()["request_id"] == quoted
    other = {"q": "starter smells of acetone"}
    miss = await ask(a, ALICE, body=other, **{"X-Request-ID": quoted})  # stored from this one
    later = await ask(a, ALICE, body=other)
    assert (miss.headers["x-answer-cache"], later.headers["x-answer-cache"]) == ("miss", "hit")
    assert later.json()["request_id"] == later.headers["x-request-id"]
    assert later.json()["results"] == miss.json()["results"]
    bypass = await ask(a, ALICE, **{"Cache-Control": "no-cache"})
    assert bypass.headers["x-answer-cache"] == "bypass"
    metrics = (await a.get("/metrics")).text
    assert "rag_answer_cache_hit_total 4.0" in metrics and "rag_answer_cache_miss_total 2.0" in metrics


async def test_a_write_changes_the_next_answer_here_and_in_the_other_replica(
    pair: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    a, b = pair
    mine = {"q": "sourdough starter: how often to feed it", "k": 5}
    await ask(a, ALICE, body=mine)
    assert (await ask(a, ALICE, body=mine)).headers["x-answer-cache"] == "hit"
    await ask(b, ALICE)
    assert (await ask(b, ALICE)).headers["x-answer-cache"] == "hit"
    new = {"id": "fresh", "text": "sourdough starter: feed it flour and water every day"}
    r = await a.post("/documents", json={"tenant": "t1", "documents": [new]}, headers=ADMIN.headers)
    assert r.status_code == 200, r.text

    # the other replica's very next request misses: the generation is shared through Redis
    assert (await ask(b, ALICE)).headers["x-answer-cache"] == "miss"
    after = await ask(a, ALICE, body=mine)
    assert after.headers["x-answer-cache"] == "miss"
    assert "fresh" in [h["payload"]["doc_id"] for h in after.json()["results"]]


async def test_a_write_that_fails_part_way_still_changes_the_next_answer(
    pair: tuple[httpx.AsyncClient, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The points are written, then a later step of the request fails (here the read-back
    check): the client gets an error, but no answer from before the write is served again."""
    import app.ingest

    a, b = pair
    await ask(b, ALICE)
    assert (await ask(b, ALICE)).headers["x-answer-cache"] == "hit"

    async def written_then_failed(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("read-back check failed")

    monkeypatch.setattr(app.ingest, "verify_writes", written_then_failed)
    new = {"id": "half", "text": "sourdough starter: a spoon of rye flour wakes it up"}
    r = await a.post("/documents", json={"tenant": "t1", "documents": [new]}, headers=ADMIN.headers)
    assert r.status_code == 500, r.text
    assert (await ask(b, ALICE)).headers["x-answer-cache"] == "miss"


async def test_tenants_never_share_answers_and_auth_and_limits_come_first(
    pair: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    a, _ = pair
    alice = await ask(a, ALICE)
    bob = await ask(a, BOB)
    assert bob.headers["x-answer-cache"] == "miss"
    assert {h["payload"]["tenant"] for h in bob.json()["results"]} == {"t2"}
    assert {h["payload"]["tenant"] for h in alice.json()["results"]} == {"t1"}

    wrong = make_key("alice-ac", "t1")  # the same id, another token: not the key
    assert_json_error(await ask(a, wrong), 401, "unauthorized")
    statuses = [(await ask(a, TIGHT)).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]  # cached answers still count against the limit


async def test_a_degraded_answer_is_never_cached(model_dir: Path, redis_url: str, tmp_path: Path) -> None:
    s = auth_settings(
        model_dir,
        tmp_path / "q",
        redis_url,
        KEYS,
        answer_cache={"enabled": True},
        reranker={"kind": "http", "url": "http://127.0.0.1:9"},  # nothing listens: degraded
    )
    async with serve(s) as (c, _):
        await ingest(c, ADMIN, "t1", corpus(10))
        first = await ask(c, ALICE)
        second = await ask(c, ALICE)
        assert first.json()["degraded"] and second.json()["degraded"]
        assert [first.headers["x-answer-cache"], second.headers["x-answer-cache"]] == ["miss", "miss"]
