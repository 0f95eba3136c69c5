"""HttpReranker against a real HTTP server on loopback speaking TEI `POST /rerank` and
Cohere-style `POST /v1/rerank`, including every way such a server can misbehave."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from app.clients.rerank import HttpReranker, reranker_from_settings
from app.errors import (
    DependencyBadResponse,
    DependencyError,
    DependencyRejected,
    DependencyTimeout,
    DependencyUnavailable,
)
from app.settings import RerankerSettings
from app.types import Candidate

from .conftest import Reply, StubServer

PATHS = {"tei": "/rerank", "cohere": "/v1/rerank"}
CANDS = [Candidate(f"p{i}", 0.5, {"text": f"passage number {i}"}) for i in range(4)]


def tei(rows: list[tuple[int, float]]) -> bytes:
    return json.dumps([{"index": i, "score": s} for i, s in rows]).encode()


def cohere(rows: list[tuple[int, float]]) -> bytes:
    results = [{"index": i, "relevance_score": s} for i, s in rows]
    return json.dumps({"id": "r-1", "results": results, "meta": {}}).encode()


ENCODERS: dict[str, Callable[[list[tuple[int, float]]], bytes]] = {"tei": tei, "cohere": cohere}


@pytest.fixture(params=["tei", "cohere"])
def api(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make(url: str, api: str, timeout_s: float = 1.0) -> HttpReranker:
    s = RerankerSettings(kind="http", url=url, api=api, model="tiny-rerank", timeout_s=timeout_s)
    r = reranker_from_settings(s)
    assert isinstance(r, HttpReranker)
    return r


@pytest.fixture
async def reranker(stub: StubServer, api: str) -> AsyncIterator[HttpReranker]:
    r = make(stub.url, api)
    try:
        yield r
    finally:
        await r.aclose()


def answer(stub: StubServer, api: str, reply: Reply) -> None:
    stub.routes[("POST", PATHS[api])] = reply


async def test_scores_come_back_in_candidate_order(
    stub: StubServer, api: str, reranker: HttpReranker
) -> None:
    # servers sort by relevance: the answer is out of candidate order
    rows = [(2, 0.9), (0, 0.7), (3, 0.2), (1, 0.1)]
    answer(stub, api, Reply(200, ENCODERS[api](rows)))
    assert await reranker.score("what is passage two", CANDS) == [0.7, 0.1, 0.9, 0.2]

    [(method, path, raw)] = stub.requests
    assert (method, path) == ("POST", PATHS[api])
    body = json.loads(raw)
    assert body["query"] == "what is passage two"
    texts = [c.text for c in CANDS]
    if api == "tei":
        assert body["texts"] == texts
    else:
        assert body["documents"] == texts
        assert body["model"] == "tiny-rerank"
        assert body["top_n"] == len(CANDS)


async def test_no_candidates_means_no_request(stub: StubServer, reranker: HttpReranker) -> None:
    assert await reranker.score("q", []) == []
    assert stub.requests == []


async def test_id_names_api_model_and_url(stub: StubServer) -> None:
    a = make(stub.url, "tei")
    b = make(stub.url, "cohere")
    c = make(stub.url + "/other", "tei")
    try:
        assert len({a.id, b.id, c.id}) == 3
        assert a.id == make(stub.url, "tei").id
    finally:
        for r in (a, b, c):
            await r.aclose()


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, DependencyRejected),
        (401, DependencyRejected),
        (413, DependencyRejected),
        (422, DependencyRejected),
        (503, DependencyUnavailable),
        (502, DependencyUnavailable),
        (500, DependencyBadResponse),
    ],
)
async def test_status_codes(
    stub: StubServer, api: str, reranker: HttpReranker, status: int, expected: type[DependencyError]
) -> None:
    answer(stub, api, Reply(status, b'{"error": "no"}'))
    with pytest.raises(expected) as err:
        await reranker.score("q", CANDS)
    assert type(err.value) is expected
    assert err.value.dependency == "reranker"


def rows_body(api: str, rows: list[Any]) -> bytes:
    """The raw rows, with "s" as the API's score key, wrapped as the API wraps them."""
    key = "score" if api == "tei" else "relevance_score"
    renamed = [
        {(key if k == "s" else k): v for k, v in r.items()} if isinstance(r, dict) else r for r in rows
    ]
    return json.dumps(renamed if api == "tei" else {"id": "r-1", "results": renamed}).encode()


def malformed(api: str) -> dict[str, bytes]:
    def body(*rows: Any) -> bytes:
        return rows_body(api, list(rows))

    ok = [{"index": i, "s": 0.1 * (i + 1)} for i in range(3)]
    cases = {
        "not json": b"<html>oops</html>",
        "empty body": b"",
        "missing index": body(*ok, {"s": 0.4}),
        "missing candidate": body(*ok),
        "duplicate index": body(*ok, {"index": 2, "s": 0.4}),
        "index out of range": body(*ok, {"index": 4, "s": 0.4}),
        "negative index": body(*ok, {"index": -1, "s": 0.4}),
        "index not a number": body(*ok, {"index": "three", "s": 0.4}),
        "NaN score": body(*ok, {"index": 3, "s": float("nan")}),
        "infinite score": body(*ok, {"index": 3, "s": float("inf")}),
        "score not a number": body(*ok, {"index": 3, "s": "high"}),
        "score null": body(*ok, {"index": 3, "s": None}),
        "missing score": body(*ok, {"index": 3}),
        "row not an object": body(*ok, 3),
        # each of these would be a complete, valid answer if the value were coerced
        "float index": body(*ok, {"index": 3.0, "s": 0.4}),
        "boolean index": body(ok[0], ok[2], {"index": 3, "s": 0.4}, {"index": True, "s": 0.2}),
        "score as a string": body(*ok, {"index": 3, "s": "0.4"}),
        "boolean score": body(*ok, {"index": 3, "s": True}),
    }
    if api == "tei":
        cases["an object, not a list"] = b'{"results": []}'
    else:
        cases["a list, not an object"] = rows_body("tei", [*ok, {"index": 3, "s": 0.4}])
        cases["no results"] = b'{"id": "x"}'
    return cases


@pytest.mark.parametrize("api_name", ["tei", "cohere"])
async def test_malformed_answers_are_bad_responses(stub: StubServer, api_name: str) -> None:
    r = make(stub.url, api_name)
    try:
        for name, body in malformed(api_name).items():
            answer(stub, api_name, Reply(200, body))
            with pytest.raises(DependencyBadResponse):
                await r.score("q", CANDS)
            assert stub.requests, name
            stub.requests.clear()
    finally:
        await r.aclose()


async def test_connection_refused_is_unavailable(api: str, dead_port: int) -> None:
    r = make(f"http://127.0.0.1:{dead_port}", api)
    try:
        with pytest.raises(DependencyUnavailable) as err:
            await r.score("q", CANDS)
        assert type(err.value) is DependencyUnavailable
        with pytest.raises(DependencyUnavailable):
            await r.ping()
    finally:
        await r.aclose()


async def test_slow_server_times_out(stub: StubServer, api: str) -> None:
    answer(stub, api, Reply(200, ENCODERS[api]([(i, 0.5) for i in range(4)]), delay_s=2.0))
    r = make(stub.url, api, timeout_s=0.2)
    try:
        with pytest.raises(DependencyTimeout) as err:
            await asyncio.wait_for(r.score("q", CANDS), timeout=10)
        assert err.value.dependency == "reranker"
    finally:
        await r.aclose()


async def test_silent_server_times_out(api: str, silent_port: int) -> None:
    r = make(f"http://127.0.0.1:{silent_port}", api, timeout_s=0.2)
    try:
        with pytest.raises(DependencyTimeout):
            await asyncio.wait_for(r.score("q", CANDS), timeout=10)
    finally:
        await r.aclose()


async def test_ping_uses_health(stub: StubServer, reranker: HttpReranker) -> None:
    stub.routes[("GET", "/health")] = Reply(200, b"")
    await reranker.ping()
    stub.routes[("GET", "/health")] = Reply(503, b"")
    with pytest.raises(DependencyUnavailable):
        await reranker.ping()


def test_http_kind_needs_a_url() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"needs reranker\.url"):
        RerankerSettings(kind="http")
