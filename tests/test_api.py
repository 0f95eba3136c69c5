"""POST /rag end to end on the real model, the real embedded Qdrant engine and a real Redis."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import pytest
from support.app import running_app

from app.corpus import SAMPLE_QUERIES


async def rag(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/rag", json=body)


async def test_answer_shape_headers_and_order(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/rag", json={"q": "best grind size for espresso", "k": 20}, headers={"X-Request-ID": "abc-123"}
    )
    assert r.status_code == 200
    body = r.json()
    assert r.headers["x-request-id"] == "abc-123" == body["request_id"]
    assert r.headers["x-cache"] == body["cache"] == "miss"
    assert r.headers["server-timing"].startswith("embed;dur=")
    assert {"search;dur=", "rerank;dur="} <= {
        p.strip().split("=")[0] + "=" for p in r.headers["server-timing"].split(",")
    }
    assert body["reranked"] is True and body["degraded"] == []
    assert set(body["timings_ms"]) == {"embed", "search", "rerank", "total"}
    results = body["results"]
    assert len(results) == 20
    scores = [p["score"] for p in results]
    assert scores == sorted(scores, reverse=True)
    for p in results:
        assert set(p) == {"id", "score", "vector_score", "text", "payload"}
        assert p["text"] and "text" not in p["payload"]
        assert p["payload"]["doc_id"].startswith("syn-")
        assert p["payload"]["tenant"] == "default"
        assert len(p["payload"]["content_hash"]) == 16
    assert len({p["id"] for p in results}) == 20


async def test_request_id_generated_when_absent_or_invalid(client: httpx.AsyncClient) -> None:
    r1 = await rag(client, q="espresso")
    r2 = await client.post("/rag", json={"q": "espresso"}, headers={"X-Request-ID": "x" * 500})
    for r in (r1, r2):
        assert r.status_code == 200
        assert len(r.headers["x-request-id"]) == 32
        assert r.json()["request_id"] == r.headers["x-request-id"]
    assert r1.headers["x-request-id"] != r2.headers["x-request-id"]


@pytest.mark.parametrize("topic", ["sourdough", "kubernetes", "astronomy", "chess", "first-aid"])
async def test_topic_queries_return_that_topic_first(client: httpx.AsyncClient, topic: str) -> None:
    from app.corpus import TOPICS

    assert topic in TOPICS
    for q in SAMPLE_QUERIES[topic][:2]:
        r = await rag(client, q=q, k=30, top_n=5)
        assert r.status_code == 200
        topics = [p["payload"]["topic"] for p in r.json()["results"]]
        assert topics[0] == topic, (q, topics)
        assert Counter(topics)[topic] >= 4, (q, topics)


async def test_second_identical_request_is_a_cache_hit(client: httpx.AsyncClient) -> None:
    first = (await rag(client, q="how do I keep a sourdough starter alive", k=25)).json()
    second_resp = await rag(client, q="  how do I keep a   sourdough starter alive ", k=25)
    second = second_resp.json()
    assert first["cache"] == "miss" and second["cache"] == "hit"
    assert second_resp.headers["x-cache"] == "hit"
    assert [p["id"] for p in first["results"]] == [p["id"] for p in second["results"]]
    assert [p["score"] for p in first["results"]] == [p["score"] for p in second["results"]]
    metrics = (await client.get("/metrics")).text
    assert "reranker_cache_hit_total 1.0" in metrics
    assert "reranker_cache_miss_total 1.0" in metrics


async def test_top_n_and_rerank_false(client: httpx.AsyncClient) -> None:
    r = (await rag(client, q="telescope aperture and magnification", k=40, top_n=7)).json()
    assert len(r["results"]) == 7
    plain = (await rag(client, q="telescope aperture and magnification", k=40, rerank=False)).json()
    assert plain["reranked"] is False and plain["cache"] == "off"
    assert len(plain["results"]) == 40
    assert all(p["score"] == p["vector_score"] for p in plain["results"])
    vs = [p["vector_score"] for p in plain["results"]]
    assert vs == sorted(vs, reverse=True)


async def test_filter_restricts_results(client: httpx.AsyncClient) -> None:
    r = (await rag(client, q="how to fix things", k=30, filter={"topic": "cycling"})).json()
    assert r["results"] and {p["payload"]["topic"] for p in r["results"]} == {"cycling"}
    r = (await rag(client, q="how to fix things", k=30, filter={"topic": ["cycling", "guitar"]})).json()
    assert {p["payload"]["topic"] for p in r["results"]} <= {"cycling", "guitar"}
    assert len({p["payload"]["topic"] for p in r["results"]}) == 2
    r = (await rag(client, q="how to fix things", filter={"topic": "no-such-topic"})).json()
    assert r["results"] == []


async def test_ef_override_is_clamped_and_accepted(client: httpx.AsyncClient) -> None:
    for ef in (1, 64, 10**6):
        r = await rag(client, q="budgeting for retirement", k=10, ef=ef)
        assert r.status_code == 200, r.text
        assert len(r.json()["results"]) == 10


BAD_BODIES: list[tuple[Any, str]] = [
    ({}, "q"),
    ({"q": ""}, "blank"),
    ({"q": "   \n\t "}, "blank"),
    ({"q": "x" * 2049}, "2048"),
    ({"q": 5}, "q"),
    ({"q": "x", "k": 0}, "k"),
    ({"q": "x", "k": 201}, "k"),
    ({"q": "x", "k": "50"}, "k"),
    ({"q": "x", "k": 5.5}, "k"),
    ({"q": "x", "k": True}, "k"),
    ({"q": "x", "k": 5, "top_n": 6}, "top_n"),
    ({"q": "x", "top_n": 0}, "top_n"),
    ({"q": "x", "rerank": "yes"}, "rerank"),
    ({"q": "x", "ef": 0}, "ef"),
    ({"q": "x", "unknown": 1}, "unknown"),
    ({"q": "x", "filter": {"tenant": "other"}}, "tenant"),
    ({"q": "x", "filter": {"topic": []}}, "filter"),
    ({"q": "x", "filter": {"topic": {"$ne": 1}}}, "filter"),
    ({"q": "x", "filter": {"source": ["faq", 1]}}, "filter"),  # one type per list
    ({"q": "x", "filter": {f"k{i}": "v" for i in range(9)}}, "filter"),
    ([1, 2], "body"),
    ("just a string", "body"),
]


@pytest.mark.parametrize(("body", "mentions"), BAD_BODIES)
async def test_invalid_input_is_422_with_json_error(
    client: httpx.AsyncClient, body: Any, mentions: str
) -> None:
    r = await client.post("/rag", json=body)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request"
    assert mentions in err["message"]
    assert err["request_id"] == r.headers["x-request-id"]


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    r = await client.post("/rag", content=b'{"q": "x",', headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "malformed_json"


async def test_bad_request_timeout_header_is_422(client: httpx.AsyncClient) -> None:
    for v in ("abc", "-1", "0", "nan", "inf"):
        r = await client.post("/rag", json={"q": "x"}, headers={"X-Request-Timeout": v})
        assert r.status_code == 422, (v, r.text)
        assert "X-Request-Timeout" in r.json()["error"]["message"]


async def test_body_over_limit_is_413_declared_or_chunked(client: httpx.AsyncClient) -> None:
    big = b'{"q": "' + b"a" * 20000 + b'"}'
    r = await client.post("/rag", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json()["error"]["type"] == "payload_too_large"

    async def chunks() -> Any:
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000]

    r = await client.post("/rag", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers
    assert r.status_code == 413
    assert r.json()["error"]["type"] == "payload_too_large"


async def test_unknown_route_and_wrong_method_are_json(client: httpx.AsyncClient) -> None:
    r = await client.get("/nope")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"
    r = await client.get("/rag")
    assert r.status_code == 405 and r.json()["error"]["type"] == "method_not_allowed"


async def test_probes_and_docs(client: httpx.AsyncClient) -> None:
    assert (await client.get("/livez")).json() == {"status": "ok"}
    r = await client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"ok": ["embedder", "qdrant", "redis", "reranker"], "failing": {}}
    assert (await client.get("/docs")).status_code == 200
    schema = (await client.get("/openapi.json")).json()
    assert "/rag" in schema["paths"]


async def test_metrics_use_route_templates(client: httpx.AsyncClient) -> None:
    await rag(client, q="chess opening principles")
    for i in range(20):
        await client.get(f"/random/{i}")
    text = (await client.get("/metrics")).text
    assert 'http_server_request_duration_seconds_count{method="POST",route="/rag",status="200"} 1.0' in text
    assert 'route="unmatched"' in text
    assert "/random/" not in text
    for stage in ("embed", "search", "rerank", "cache"):
        assert f'rag_stage_duration_seconds_count{{stage="{stage}"}}' in text
    assert 'rag_circuit_breaker_state{dependency="reranker"} 0.0' in text
    assert "rag_requests_in_flight 0.0" in text


async def test_readyz_is_503_when_the_collection_is_missing(settings_factory: Any, tmp_path: Any) -> None:
    settings = settings_factory(qdrant={"path": tmp_path / "empty"})
    async with running_app(settings) as (c, _):
        r = await c.get("/readyz")
        assert r.status_code == 503
        assert "qdrant" in r.json()["failing"]
        r = await c.post("/rag", json={"q": "anything"})
        assert r.status_code == 503
        assert r.json()["error"]["type"] == "upstream_unavailable"
        assert r.headers["retry-after"] == "1"


async def test_docs_can_be_turned_off(settings_factory: Any) -> None:
    async with running_app(settings_factory(server={"docs_enabled": False})) as (c, _):
        assert (await c.get("/docs")).status_code == 404
        assert (await c.get("/openapi.json")).status_code == 404


async def test_the_young_gc_generation_is_the_configured_size_while_the_app_runs(
    settings_factory: Any,
) -> None:
    import gc

    before = gc.get_threshold()
    async with running_app(settings_factory(server={"gc_threshold": 5000})) as (c, _):
        assert gc.get_threshold() == (5000, *before[1:])
        assert (await rag(c, q="espresso", k=5)).status_code == 200
    assert gc.get_threshold() == before  # given back when the app stops
    async with running_app(settings_factory(server={"gc_threshold": 0})) as _:
        assert gc.get_threshold() == before  # 0: Python's own, untouched
