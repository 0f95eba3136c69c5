"""Tenant isolation: two tenants with overlapping corpora (the same document ids, near-identical
texts), both ingested through POST /documents. Whatever the query, no answer and no rerank-cache
entry crosses from one tenant to the other; per-tenant `k` policy holds."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.keys import make_key
from tenancy_support import assert_json_error, auth_settings, corpus, ingest, serve

from app.clients.cache import KEY_PREFIX, cache_key
from app.policy import TenantPolicy
from app.schemas import normalize_query
from app.types import Candidate, point_id

ADMIN = make_key("admin-iso", "ops", admin=True)
ACME = make_key("acme-1", "acme")
GLOBEX = make_key("globex-1", "globex")
CALLERS = {"acme": ACME, "globex": GLOBEX}
GLOBEX_MARK = " Globex edition."
N_DOCS = 40
DOCS = corpus(N_DOCS, seed=5)
IDS = [d["id"] for d in DOCS]
TOPICS = sorted({d["topic"] for d in DOCS})
VOCAB = sorted({w for d in DOCS for w in re.findall(r"[a-z]{4,}", d["text"].lower())})


@pytest.fixture(scope="module")
async def gateway(
    model_dir: Path, redis_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    if redis_server.proc is None:
        redis_server.start()
    redis_server.cli("FLUSHALL")
    settings_ = auth_settings(
        model_dir,
        tmp_path_factory.mktemp("iso") / "qdrant",
        redis_server.url,
        [ADMIN, ACME, GLOBEX],
        auth={"rate_limit": 100_000, "tenants": {"acme": {"max_k": 30}}},
        qdrant={"tenant_ef": {"globex": 128}},
    )
    async with serve(settings_) as (client, app):
        await ingest(client, ADMIN, "acme", DOCS)
        await ingest(client, ADMIN, "globex", [{**d, "text": d["text"] + GLOBEX_MARK} for d in DOCS])
        yield client, app


def rerank_entries(redis_server: Any) -> set[str]:
    return {k for k in redis_server.cli("KEYS", KEY_PREFIX + "*").split("\n") if k}


def assert_own_tenant(tenant: str, body: dict[str, Any]) -> None:
    for p in body["results"]:
        payload = p["payload"]
        assert payload["tenant"] == tenant
        assert p["id"] == point_id(tenant, payload["doc_id"])
        assert p["text"].endswith(GLOBEX_MARK) == (tenant == "globex")


queries = st.one_of(
    st.lists(st.sampled_from(VOCAB), min_size=1, max_size=8).map(" ".join),
    st.text(min_size=1, max_size=60).filter(lambda s: bool(normalize_query(s))),
)
filters = st.one_of(
    st.none(),
    st.builds(lambda i: {"doc_id": i}, st.sampled_from(IDS)),
    st.builds(lambda t: {"topic": t}, st.sampled_from(TOPICS)),
    st.builds(
        lambda ts: {"topic": ts}, st.lists(st.sampled_from(TOPICS), min_size=1, max_size=3, unique=True)
    ),
)


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(q=queries, k=st.integers(1, 30), flt=filters, first=st.sampled_from(["acme", "globex"]))
async def test_no_result_or_cache_entry_crosses_tenants(
    gateway: tuple[httpx.AsyncClient, Any], redis_server: Any, q: str, k: int, flt: Any, first: str
) -> None:
    client, app = gateway
    body: dict[str, Any] = {"q": q, "k": k}
    if flt is not None:
        body["filter"] = flt
    second = "globex" if first == "acme" else "acme"
    redis_server.cli("FLUSHDB")  # every example starts with an empty rerank cache
    entries = 0
    for tenant in (first, second):
        r = await client.post("/rag", json=body, headers=CALLERS[tenant].headers)
        assert r.status_code == 200, r.text
        answer = r.json()
        assert_own_tenant(tenant, answer)
        await app.state.rag.pipeline.drain()  # the cache write of this answer has landed
        if not answer["results"]:
            assert answer["cache"] == "off"
            continue
        # the first tenant's identical query is in the cache by now: for the second tenant it
        # must still be a miss, and its scores must go into an entry of its own
        assert answer["cache"] == "miss", (tenant, body)
        entries += 1
        assert len(rerank_entries(redis_server)) == entries


def test_the_rerank_cache_key_depends_on_the_tenant() -> None:
    # point ids already differ per tenant; the key must differ even for identical candidates
    cands = [Candidate("p1", 0.5, {"content_hash": "abc"}), Candidate("p2", 0.4, {"content_hash": "def"})]
    assert cache_key("lexical", "acme", "q", cands) != cache_key("lexical", "globex", "q", cands)


async def test_the_same_doc_id_is_two_documents(gateway: tuple[httpx.AsyncClient, Any]) -> None:
    client, _ = gateway
    shared = IDS[3]
    body = {"q": DOCS[3]["text"][:200], "k": 5, "filter": {"doc_id": shared}}
    for tenant, key in CALLERS.items():
        r = await client.post("/rag", json=body, headers=key.headers)
        results = r.json()["results"]
        assert len(results) == 1
        assert_own_tenant(tenant, r.json())
        assert results[0]["payload"]["doc_id"] == shared


async def test_delete_removes_only_that_tenants_document(gateway: tuple[httpx.AsyncClient, Any]) -> None:
    client, _ = gateway
    victim = IDS[7]
    r = await client.delete(f"/documents/{victim}", params={"tenant": "acme"}, headers=ADMIN.headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"tenant": "acme", "id": victim, "point_id": point_id("acme", victim)}
    body = {"q": DOCS[7]["text"][:200], "k": 5, "filter": {"doc_id": victim}}
    acme = (await client.post("/rag", json=body, headers=ACME.headers)).json()
    globex = (await client.post("/rag", json=body, headers=GLOBEX.headers)).json()
    assert acme["results"] == []
    assert [p["payload"]["doc_id"] for p in globex["results"]] == [victim]


async def test_upsert_replaces_text_and_content_hash(gateway: tuple[httpx.AsyncClient, Any]) -> None:
    client, _ = gateway
    doc = {"id": IDS[9], "text": "A brand new passage about tidal energy storage in salt caverns."}
    r = await client.post("/documents", json={"tenant": "acme", "documents": [doc]}, headers=ADMIN.headers)
    out = r.json()["documents"][0]
    import hashlib

    assert out["content_hash"] == hashlib.sha256(doc["text"].encode()).hexdigest()[:16]
    body = {"q": "tidal energy salt caverns", "k": 3, "filter": {"doc_id": IDS[9]}}
    acme = (await client.post("/rag", json=body, headers=ACME.headers)).json()["results"]
    assert acme[0]["text"] == doc["text"]
    assert acme[0]["payload"]["content_hash"] == out["content_hash"]
    globex = (await client.post("/rag", json=body, headers=GLOBEX.headers)).json()["results"]
    assert globex[0]["text"] != doc["text"]


async def test_per_tenant_max_k_and_ef(gateway: tuple[httpx.AsyncClient, Any]) -> None:
    client, app = gateway
    r = await client.post("/rag", json={"q": "anything", "k": 31}, headers=ACME.headers)
    assert "at most 30" in assert_json_error(r, 422, "invalid_request")["message"]
    r = await client.post("/rag", json={"q": "anything", "k": 20, "top_n": 31}, headers=ACME.headers)
    assert_json_error(r, 422, "invalid_request")
    r = await client.post("/rag", json={"q": "python packaging wheel", "rerank": False}, headers=ACME.headers)
    assert r.status_code == 200 and len(r.json()["results"]) == 30  # the default k, cut to the policy
    r = await client.post("/rag", json={"q": "python packaging wheel", "k": 35}, headers=GLOBEX.headers)
    assert r.status_code == 200 and len(r.json()["results"]) == 35  # globex has no k policy
    conf = app.state.rag.settings
    assert TenantPolicy.for_tenant(conf, "globex").search_ef(None) == 128
    assert TenantPolicy.for_tenant(conf, "acme").search_ef(None) == conf.qdrant.ef_default


async def test_every_answer_carries_the_request_id_and_rate_limit_headers_once(
    gateway: tuple[httpx.AsyncClient, Any],
) -> None:
    """The middleware adds them on the way out; no handler merges them by hand."""
    client, _ = gateway
    rag = await client.post("/rag", json={"q": "anything", "k": 3, "rerank": False}, headers=ACME.headers)
    gone = await client.delete("/documents/never-stored?tenant=acme", headers=ADMIN.headers)  # a no-op
    refused = await client.post("/rag", json={"q": "anything", "k": 31}, headers=ACME.headers)
    for r, status in ((rag, 200), (gone, 200), (refused, 422)):
        assert r.status_code == status
        for name in ("x-request-id", "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"):
            assert len(r.headers.get_list(name)) == 1, (r.request.url, name)
        assert r.headers["x-ratelimit-limit"] == "100000"
    assert rag.json()["request_id"] == rag.headers["x-request-id"]
    assert refused.json()["error"]["request_id"] == refused.headers["x-request-id"]
