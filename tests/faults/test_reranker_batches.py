"""The HTTP reranker against a stock TEI's batch limit (the reranker test server with
`limit_batch`): candidates go out in requests no larger than `/info`'s `max_client_batch_size`
(32 when the server does not say; /info is read when more than 32 are to be scored, or after a
413), the scores come back merged in candidate order, and k=200 through /rag is reranked, not
degraded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.clients.rerank import HttpReranker
from app.errors import DependencyRejected, DependencyUnavailable
from app.settings import RerankerSettings
from app.types import Candidate

from .reranker_server import Behaviour, RerankerServer


def candidates(n: int) -> list[Candidate]:
    return [Candidate(f"p{i}", 1.0 - i / 1000, {"text": f"passage {i}"}) for i in range(n)]


def expected_scores(server: RerankerServer, texts: list[str]) -> list[float]:
    """What the server gave each text: position j of n in its own request scores j / n."""
    by_text = {t: j / len(r.texts) for r in server.records if r.status == 200 for j, t in enumerate(r.texts)}
    return [by_text[t] for t in texts]


@pytest.fixture
async def http_reranker(reranker: RerankerServer, api: str) -> AsyncIterator[HttpReranker]:
    settings = RerankerSettings(kind="http", url=reranker.url, api=api, model="m", timeout_s=5.0)
    r = HttpReranker.from_settings(settings)
    try:
        yield r
    finally:
        await r.aclose()


@pytest.fixture(params=["tei", "cohere"])
def api(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize(("limit", "n"), [(32, 200), (16, 40), (64, 50), (8, 33)])
async def test_requests_stay_within_the_limit_from_info(reranker: RerankerServer, limit: int, n: int) -> None:
    reranker.limit_batch(limit)
    settings = RerankerSettings(kind="http", url=reranker.url, api="tei", model="m", timeout_s=5.0)
    r = HttpReranker.from_settings(settings)
    try:
        cands = candidates(n)
        scores = await r.score("q", cands)
        assert await r.batch_size() == limit
    finally:
        await r.aclose()
    sizes = sorted((rec.n_texts for rec in reranker.records), reverse=True)
    assert sizes == [limit] * (n // limit) + ([n % limit] if n % limit else [])
    assert {rec.status for rec in reranker.records} == {200}
    texts = [c.text for c in cands]
    assert sorted(t for rec in reranker.records for t in rec.texts) == sorted(texts)  # each once
    assert scores == expected_scores(reranker, texts)  # merged back in candidate order


async def test_without_info_the_limit_is_32(reranker: RerankerServer, http_reranker: HttpReranker) -> None:
    # a TEI at its default limit whose /info is not reachable, and every Cohere-style server
    reranker.limit_batch(32, info=False)
    cands = candidates(200)
    scores = await http_reranker.score("q", cands)
    assert sorted(rec.n_texts for rec in reranker.records) == [8, 32, 32, 32, 32, 32, 32]
    assert {rec.status for rec in reranker.records} == {200}
    assert scores == expected_scores(reranker, [c.text for c in cands])


async def test_a_limit_below_32_is_learned_from_the_413(reranker: RerankerServer) -> None:
    reranker.limit_batch(16)
    settings = RerankerSettings(kind="http", url=reranker.url, api="tei", model="m", timeout_s=5.0)
    r = HttpReranker.from_settings(settings)
    try:
        cands = candidates(20)
        scores = await r.score("q", cands)
        assert await r.batch_size() == 16
        first = [(rec.n_texts, rec.status) for rec in reranker.records]
        assert first[0] == (20, 413) and sorted(first[1:]) == [(4, 200), (16, 200)]
        assert scores == expected_scores(reranker, [c.text for c in cands])
        reranker.reset()
        reranker.limit_batch(16)
        await r.score("q", cands)  # the limit is remembered: no 413 the second time
        assert sorted((rec.n_texts, rec.status) for rec in reranker.records) == [(4, 200), (16, 200)]
    finally:
        await r.aclose()


async def test_a_413_without_info_is_a_rejection(
    reranker: RerankerServer, http_reranker: HttpReranker
) -> None:
    reranker.limit_batch(16, info=False)  # nothing says what would fit
    with pytest.raises(DependencyRejected):
        await http_reranker.score("q", candidates(20))


async def test_a_failing_batch_fails_the_rerank(
    reranker: RerankerServer, http_reranker: HttpReranker
) -> None:
    reranker.limit_batch(32)
    reranker.script(Behaviour("ok"), Behaviour("status", status=503))
    with pytest.raises(DependencyUnavailable):
        await http_reranker.score("q", candidates(100))
    assert 2 <= reranker.count <= 4
    assert "pending" not in reranker.outcomes()


async def test_k_200_through_rag_is_reranked_by_a_stock_tei(
    fault_settings: Any, running_app: Any, reranker: RerankerServer
) -> None:
    reranker.limit_batch(32)
    settings = fault_settings(server={"deadline_s": 10.0}, reranker={"timeout_s": 5.0}, redis={"url": ""})
    async with running_app(settings) as (client, _app):
        r = await client.post("/rag", json={"q": "how do I keep a sourdough starter alive", "k": 200})
        assert r.status_code == 200, r.text
        body = r.json()
    assert body["reranked"] is True and body["degraded"] == [], body["degraded"]
    assert sorted(rec.n_texts for rec in reranker.records) == [8, 32, 32, 32, 32, 32, 32]
    assert {rec.status for rec in reranker.records} == {200}


async def test_a_request_from_an_earlier_test_is_not_counted_in_the_next(reranker: RerankerServer) -> None:
    """The harness itself: a request an earlier test abandoned can reach the shared server after
    the next test has begun. It arrives under the old prefix, so it is answered 410, not recorded,
    and the new test's script is still whole."""
    import httpx

    stale = reranker.url
    reranker.new_test()
    reranker.script(Behaviour("status", status=503))
    async with httpx.AsyncClient() as client:
        late = await client.post(stale + "/rerank", json={"query": "q", "texts": ["a"]})
        assert late.status_code == 410
        assert reranker.count == 0
        now = await client.post(reranker.url + "/rerank", json={"query": "q", "texts": ["a"]})
    assert now.status_code == 503 and reranker.count == 1
