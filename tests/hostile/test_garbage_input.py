"""What a tenant sends cannot hurt another tenant, make the gateway 500, or break a log line:
lone surrogates, invalid UTF-8, compressed bodies, huge numbers, deep nesting, wrong media
types, over-long padded queries. Each answer is an honest 4xx with a stable JSON error body."""

from __future__ import annotations

import gzip
import json

import httpx
from hostile_support import ADMIN, ALICE, MALLORY, Gateway, metric, request_count

DEPENDENCIES = ("embedder", "qdrant", "reranker")


def assert_error(r: httpx.Response, status: int, type_: str) -> dict[str, str]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err: dict[str, str] = r.json()["error"]
    assert err["type"] == type_, err
    assert err["request_id"] == r.headers["x-request-id"]
    return err


async def post_raw(
    client: httpx.AsyncClient, path: str, body: bytes, key: object = MALLORY, **headers: str
) -> httpx.Response:
    hdrs = {"content-type": "application/json", **key.headers, **headers}  # type: ignore[attr-defined]
    return await client.post(path, content=body, headers=hdrs)


# a JSON text may spell a lone surrogate as an escape; every one of these reached a dependency
SURROGATE_BODIES = [
    rb'{"q": "test", "k": 5, "filter": {"source": "\ud800"}}',
    rb'{"q": "test", "k": 5, "filter": {"source": ["faq", "\udfff"]}}',
    rb'{"q": "test \ud800 query", "k": 5}',
    rb'{"q": "test", "k": 5, "filter": {"\ud800": "faq"}}',
]


async def test_one_tenants_garbage_cannot_open_any_breaker(client: httpx.AsyncClient) -> None:
    """Issue item 1: 25 filter values with a lone surrogate opened the shared Qdrant breaker and
    every other tenant got 503. Now each is 422, no breaker moves, and the other tenant is served."""
    for _ in range(8):
        for body in SURROGATE_BODIES:
            r = await post_raw(client, "/rag", body)
            err = assert_error(r, 422, "invalid_request")
            assert "surrogate" in err["message"]
            assert "engine" not in err["message"] and "utf-8" not in err["message"].lower()
    # and in documents (an admin key of the same tenant)
    for doc in (
        rb'{"id": "d1", "text": "some \ud800 text"}',
        rb'{"id": "d1", "text": "text", "source": "\udc00"}',
        rb'{"id": "d1", "text": "text", "lang": "\ud83d"}',
    ):
        body = b'{"tenant": "acme", "documents": [' + doc + b"]}"
        assert_error(await post_raw(client, "/documents", body, key=ADMIN), 422, "invalid_request")
    for dep in DEPENDENCIES:
        assert await metric(client, "rag_circuit_breaker_state", dependency=dep) == 0, dep
    r = await client.post(
        "/rag", json={"q": "how do I keep a sourdough starter alive", "k": 5}, headers=ALICE.headers
    )
    assert r.status_code == 200, r.text
    assert r.json()["results"]


async def test_a_surrogate_filter_key_is_422_and_every_log_line_stays_json(
    client: httpx.AsyncClient, gateway: Gateway
) -> None:
    """Issue item 4: the error body could not be encoded (500) and the log printed a traceback."""
    before = await request_count(client, "POST", "/rag", 500)
    r = await post_raw(client, "/rag", rb'{"q": "test", "filter": {"\ud800\u0000\n": "x"}}')
    assert_error(r, 422, "invalid_request")
    r = await post_raw(client, "/rag", rb'{"q": "test", "filter": {"no\ud800pe": "x"}, "k": "5"}')
    assert_error(r, 422, "invalid_request")
    assert await request_count(client, "POST", "/rag", 500) == before
    await client.get("/livez")  # one more line after ours: the log is flushed past them
    for line in gateway.log_lines():
        assert isinstance(json.loads(line), dict), line


async def test_undecodable_bodies_are_malformed_json_with_rate_limit_headers(
    client: httpx.AsyncClient,
) -> None:
    """Issue item 7: invalid UTF-8, a gzip body, a 5000-digit integer and 5000-deep nesting were
    400 `http_error`; and an authenticated caller's 400 lacked its X-RateLimit-* headers."""
    bodies = [
        b'{"q": "caf\xe9"}',
        gzip.compress(b'{"q": "test"}'),
        b'{"q": "test", "k": ' + b"7" * 5000 + b"}",
        b'{"q": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    ]
    for body in bodies:
        r = await post_raw(client, "/rag", body)
        err = assert_error(r, 400, "malformed_json")
        assert err["message"] == "request body is not valid JSON"
        assert r.headers["x-ratelimit-limit"] == "1000000"
    # authentication still comes first: without a key, a broken body is a 401
    r = await client.post("/rag", content=bodies[0], headers={"content-type": "application/json"})
    assert_error(r, 401, "unauthorized")


async def test_errors_to_counted_requests_carry_rate_limit_headers(client: httpx.AsyncClient) -> None:
    r = await client.post("/rag", json={"q": "test", "k": 0}, headers=MALLORY.headers)
    assert_error(r, 422, "invalid_request")
    assert "x-ratelimit-remaining" in r.headers
    r = await client.post("/documents", json={"tenant": "acme", "documents": []}, headers=MALLORY.headers)
    assert_error(r, 403, "forbidden")
    assert "x-ratelimit-remaining" in r.headers


async def test_json_sent_as_text_plain_is_415(client: httpx.AsyncClient) -> None:
    r = await post_raw(client, "/rag", b'{"q": "test"}', **{"content-type": "text/plain"})
    assert_error(r, 415, "unsupported_media_type")
    r = await post_raw(
        client, "/documents", b'{"tenant": "default"}', key=ADMIN, **{"content-type": "text/plain"}
    )
    assert_error(r, 415, "unsupported_media_type")


async def test_q_length_is_counted_after_trimming(client: httpx.AsyncClient) -> None:
    q = "  " + "word " * 409 + "end" + "  "  # 2048 characters between the padding
    assert len(q.strip()) == 2048
    r = await client.post("/rag", json={"q": q, "k": 5, "rerank": False}, headers=ALICE.headers)
    assert r.status_code == 200, r.text
    r = await client.post("/rag", json={"q": "x" * 2049, "k": 5}, headers=ALICE.headers)
    assert "2048" in assert_error(r, 422, "invalid_request")["message"]


async def test_422_messages_do_not_expose_pydantic_internals(client: httpx.AsyncClient) -> None:
    for body in (
        {"q": "test", "top_n": "5"},
        {"q": "test", "ef": 1.5},
        {"q": "test", "filter": {"source": {}}},
    ):
        message = assert_error(
            await client.post("/rag", json=body, headers=ALICE.headers), 422, "invalid_request"
        )["message"]
        for internal in ("function-", "constrained-", "[", "Value error", "list["):
            assert internal not in message, message


async def test_a_document_with_nine_payload_fields_is_accepted(client: httpx.AsyncClient) -> None:
    """Issue item 7: extras were counted twice, so 9 payload fields looked like 18."""
    doc = {
        "id": "nine-fields",
        "text": "a passage with nine payload fields",
        **{f"f{i}": i for i in range(9)},
    }
    r = await client.post("/documents", json={"tenant": "acme", "documents": [doc]}, headers=ADMIN.headers)
    assert r.status_code == 200, r.text
    doc = {"id": "too-many", "text": "too many fields", "source": "s", **{f"f{i}": i for i in range(17)}}
    r = await client.post("/documents", json={"tenant": "acme", "documents": [doc]}, headers=ADMIN.headers)
    assert_error(r, 422, "invalid_request")
