"""POST/DELETE /documents bounds: the ingestion route has its own body limit (413, declared or
chunked), and every part of the body is bounded or checked (422), before anything is embedded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.keys import make_key
from tenancy_support import assert_json_error, auth_settings, serve

ADMIN = make_key("admin-docs", "ops", admin=True)
LIMIT = 64 * 1024


@pytest.fixture(scope="module")
async def client(
    model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[httpx.AsyncClient]:
    settings = auth_settings(
        model_dir,
        tmp_path_factory.mktemp("docs") / "qdrant",
        None,
        [ADMIN],
        server={"max_documents_body_bytes": LIMIT},
    )
    async with serve(settings) as (c, _):
        yield c


def doc(i: int = 0, **kw: Any) -> dict[str, Any]:
    return {"id": f"d{i}", "text": f"passage number {i} about sailing knots", **kw}


async def post(client: httpx.AsyncClient, body: Any) -> httpx.Response:
    return await client.post("/documents", json=body, headers=ADMIN.headers)


async def test_a_body_too_big_for_rag_is_fine_for_documents(client: httpx.AsyncClient) -> None:
    docs = [doc(i, text=f"passage {i} " + "sailing knots and rope " * 45) for i in range(20)]  # ~21 KB
    r = await post(client, {"tenant": "t1", "documents": docs, "note": "x"})
    assert_json_error(r, 422, "invalid_request")  # (unknown field) but not 413
    r = await post(client, {"tenant": "t1", "documents": docs})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tenant"] == "t1" and body["upserted"] == 20
    assert {d["id"] for d in body["documents"]} == {f"d{i}" for i in range(20)}
    assert r.headers["x-ratelimit-limit"] == "600"
    # the same body on /rag hits the general 16 KiB limit
    r = await client.post("/rag", json={"q": "x", "pad": "y" * 20_000}, headers=ADMIN.headers)
    assert_json_error(r, 413, "payload_too_large")


async def test_the_last_copy_of_a_repeated_id_wins(client: httpx.AsyncClient) -> None:
    r = await post(client, {"tenant": "ops", "documents": [doc(1), doc(1, text="the second copy")]})
    assert r.status_code == 200, r.text
    assert r.json()["upserted"] == 1
    body = {"q": "second copy", "k": 5, "filter": {"doc_id": "d1"}}
    r = await client.post("/rag", json=body, headers=ADMIN.headers)  # the admin key's tenant is "ops"
    assert [p["text"] for p in r.json()["results"]] == ["the second copy"]


async def test_over_the_documents_limit_is_413_declared_or_chunked(client: httpx.AsyncClient) -> None:
    big = b'{"tenant": "t1", "documents": [{"id": "a", "text": "' + b"a" * LIMIT + b'"}]}'
    headers = {**ADMIN.headers, "content-type": "application/json"}
    assert_json_error(await client.post("/documents", content=big, headers=headers), 413, "payload_too_large")

    async def chunks() -> Any:
        for i in range(0, len(big), 4096):
            yield big[i : i + 4096]

    r = await client.post("/documents", content=chunks(), headers=headers)
    assert "content-length" not in r.request.headers
    assert_json_error(r, 413, "payload_too_large")


BAD: list[tuple[str, Any, str]] = [
    ("no documents", {"tenant": "t1", "documents": []}, "documents"),
    ("too many documents", {"tenant": "t1", "documents": [doc(i) for i in range(257)]}, "documents"),
    ("bad tenant", {"tenant": "../etc", "documents": [doc()]}, "tenant"),
    ("blank tenant", {"tenant": "", "documents": [doc()]}, "tenant"),
    ("no tenant", {"documents": [doc()]}, "tenant"),
    ("bad id", {"tenant": "t1", "documents": [doc(id="a/b")]}, "id"),
    ("long id", {"tenant": "t1", "documents": [doc(id="a" * 129)]}, "id"),
    ("blank text", {"tenant": "t1", "documents": [doc(text="   ")]}, "text"),
    ("text not a string", {"tenant": "t1", "documents": [doc(text=5)]}, "text"),
    ("tenant inside a document", {"tenant": "t1", "documents": [doc(tenant="t2")]}, "reserved"),
    ("content hash inside", {"tenant": "t1", "documents": [doc(content_hash="x")]}, "reserved"),
    ("nested payload", {"tenant": "t1", "documents": [doc(meta={"a": 1})]}, "meta"),
    ("list payload", {"tenant": "t1", "documents": [doc(tags=["a"])]}, "tags"),
    ("payload value too long", {"tenant": "t1", "documents": [doc(topic="x" * 257)]}, "topic"),
    ("huge integer", {"tenant": "t1", "documents": [doc(year=2**60)]}, "year"),
    ("odd payload key", {"tenant": "t1", "documents": [doc(**{"$where": "1"})]}, "identifier"),
    ("too many payload keys", {"tenant": "t1", "documents": [doc(**{f"f{i}": i for i in range(18)})]}, "19"),
    ("lone surrogate", {"tenant": "t1", "documents": [doc(text="a\ud800b")]}, "unicode"),
    ("not an object", [doc()], "body"),
]


@pytest.mark.parametrize(("case", "body", "mentions"), BAD, ids=[c for c, _, _ in BAD])
async def test_invalid_documents_are_422(
    client: httpx.AsyncClient, case: str, body: Any, mentions: str
) -> None:
    if case == "lone surrogate":  # httpx refuses to encode it; send the JSON escape itself
        raw = b'{"tenant": "t1", "documents": [{"id": "d0", "text": "a\\ud800b"}]}'
        headers = {**ADMIN.headers, "content-type": "application/json"}
        r = await client.post("/documents", content=raw, headers=headers)
    else:
        r = await post(client, body)
    err = assert_json_error(r, 422, "invalid_request")
    assert mentions in err["message"], err["message"]


async def test_delete_checks_its_parameters(client: httpx.AsyncClient) -> None:
    r = await client.delete("/documents/d1", headers=ADMIN.headers)
    assert_json_error(r, 422, "invalid_request")  # tenant is required
    r = await client.delete("/documents/d1", params={"tenant": "no/slash"}, headers=ADMIN.headers)
    assert_json_error(r, 422, "invalid_request")
    r = await client.delete("/documents/%20x", params={"tenant": "t1"}, headers=ADMIN.headers)
    assert_json_error(r, 422, "invalid_request")
