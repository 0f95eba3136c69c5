"""DirectRagMiddleware (app/api/rag.py) answers POST /rag without FastAPI's route when the route
would take the body as it is. Over random requests, valid and not, with every kind of caller,
its answers are the route's: the same request sent with `X-Request-Timeout` (which the direct
path leaves to the route) gets the same status, error and results."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.keys import make_key
from tenancy_support import auth_settings, serve

import app.api.rag as rag_module
from app.clients.vectorstore.files import copy_tree
from app.schemas import MAX_Q_CHARS, RagRequest

KEY = make_key("direct-1", "default")
REVOKED = make_key("direct-2", "default", revoked=True)
CALLERS = {
    "key": KEY.headers,
    "revoked": REVOKED.headers,
    "unknown": {"Authorization": "Bearer direct-9.not-a-secret"},
    "malformed": {"Authorization": "Basic Zm9vOmJhcg=="},
    "none": {},
}
# the server's deadline is 10 s: asking for more leaves it as it is, and sends the request to the route
TO_ROUTE = {"X-Request-Timeout": "600"}


@pytest.fixture(scope="module")
async def gateway(
    model_dir: Path, built_collection: Path, redis_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    if redis_server.proc is None:
        redis_server.start()
    path = tmp_path_factory.mktemp("direct") / "qdrant"
    copy_tree(built_collection, path)
    conf = auth_settings(model_dir, path, redis_server.url, [KEY, REVOKED], auth={"rate_limit": 1_000_000})
    async with serve(conf) as (client, app):
        yield client, app


words = st.sampled_from(["kubernetes", "redis", "python", "wheel", "cache", "pod", "ttl", "index"])
texts = st.one_of(
    st.lists(words, min_size=1, max_size=6).map(" ".join),
    st.text(max_size=12),
    st.just(" "),
    st.just("x" * (MAX_Q_CHARS + 1)),
)
numbers = st.one_of(st.integers(-3, 260), st.sampled_from([5.0, 5.5, "5", True, None, 1e300]))
filter_values = st.one_of(st.text(max_size=6), st.integers(-2, 2), st.booleans(), st.floats(allow_nan=False))
filters = st.one_of(
    st.dictionaries(
        st.sampled_from(["topic", "source", "doc_id", "lang", "nope"]),
        st.one_of(filter_values, st.lists(filter_values, max_size=3)),
        max_size=3,
    ),
    st.sampled_from([[], "topic", None]),
)
fields = st.fixed_dictionaries(
    {"q": texts},
    optional={
        "k": numbers,
        "top_n": numbers,
        "rerank": st.sampled_from([True, False, "yes", 0]),
        "filter": filters,
        "ef": numbers,
        "distinct_docs": st.booleans(),
        "surprise": st.just(1),
    },
)
bodies = st.one_of(
    fields.map(lambda d: json.dumps(d).encode()),
    fields.map(lambda d: json.dumps(d, indent=1).encode("utf-16")),
    st.sampled_from([b"", b"{", b"[]", b'"q"', b"null", b'{"q": NaN}', b'{"q": "a", "q": "redis pod"}']),
    st.binary(max_size=16),
)
content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        " application/json ;x=1",
        "application/merge-patch+json",
        "application/json garbage",
        "text/plain",
        None,
    ]
)


def outcome(r: httpx.Response) -> dict[str, Any]:
    """What must be equal: the status, the headers a client acts on, and the body without what
    differs between any two requests (ids, timings, the rerank cache's state)."""
    out: dict[str, Any] = {
        "status": r.status_code,
        "headers": {h: r.headers.get(h) for h in ("content-type", "www-authenticate", "retry-after")},
    }
    body = r.json()
    if "error" in body:
        body["error"].pop("request_id")
    for field in ("request_id", "timings_ms", "cache"):
        body.pop(field, None)
    out["body"] = body
    return out


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=bodies, content_type=content_types, caller=st.sampled_from(sorted(CALLERS)))
async def test_the_direct_path_answers_as_the_route_does(
    gateway: tuple[httpx.AsyncClient, Any], body: bytes, content_type: str | None, caller: str
) -> None:
    client, _ = gateway
    headers = dict(CALLERS[caller])
    if content_type is not None:
        headers["Content-Type"] = content_type
    taken: list[RagRequest | None] = []
    plain = rag_module.plain_request

    def spy(raw: bytes, ct: str | None) -> RagRequest | None:
        taken.append(plain(raw, ct))
        return taken[-1]

    with mock.patch.object(rag_module, "plain_request", spy):
        direct = await client.post("/rag", content=body, headers=headers)
        # the direct path looked at the body once, and only after the caller was let in
        assert len(taken) == (1 if caller == "key" else 0)
        routed = await client.post("/rag", content=body, headers={**headers, **TO_ROUTE})
        assert len(taken) == (1 if caller == "key" else 0)  # it left X-Request-Timeout to the route
    assert outcome(direct) == outcome(routed), (body, content_type, caller)
    if caller == "key" and taken[0] is not None:
        assert direct.status_code in (200, 422), direct.text  # 422: the tenant's policy refused it


async def test_a_plain_request_is_answered_directly_and_in_full(
    gateway: tuple[httpx.AsyncClient, Any],
) -> None:
    client, _ = gateway
    callers: list[str] = []
    route_answer = rag_module.answer

    async def spy(*args: Any) -> Any:
        callers.append(sys._getframe(1).f_code.co_qualname)
        return await route_answer(*args)

    with mock.patch.object(rag_module, "answer", spy):
        r = await client.post("/rag", json={"q": "redis cache ttl", "k": 7}, headers=KEY.headers)
        routed = await client.post(
            "/rag", json={"q": "redis cache ttl", "k": 7}, headers={**KEY.headers, **TO_ROUTE}
        )
    assert r.status_code == routed.status_code == 200, r.text
    assert callers == ["DirectRagMiddleware.handle", "rag"]
    body = r.json()
    assert len(body["results"]) == 7 and body["reranked"] is True
    assert body["request_id"] == r.headers["x-request-id"]
    assert r.headers["x-answer-cache"] == "off"
    assert r.headers["x-ratelimit-limit"] == "1000000"
    assert r.headers["server-timing"].startswith("embed;dur=")


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        (b'{"q": "redis"}', "text/plain"),
        (b'{"q": "redis"}', None),
        (b'{"q": "redis"}', "application/json garbage"),
        (b'["q"]', "application/json"),
        (b'{"q": "redis", "k": "5"}', "application/json"),
        (b'{"q": "redis"', "application/json"),
        (b"[" * 100_000, "application/json"),
    ],
)
def test_plain_request_leaves_the_rest_to_the_route(raw: bytes, content_type: str | None) -> None:
    assert rag_module.plain_request(raw, content_type) is None


def test_plain_request_reads_what_starlette_reads() -> None:
    raw = json.dumps({"q": "redis pod", "k": 5.0}).encode("utf-16")
    req = rag_module.plain_request(raw, "application/json; charset=utf-16")
    assert req is not None and req.q == "redis pod" and req.k == 5
