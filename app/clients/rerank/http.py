"""A remote reranker: TEI `POST /rerank` or Cohere-style `POST /v1/rerank`, over httpx.

Transport failures and HTTP statuses become app.errors types through app/clients/http.py;
a malformed answer is a DependencyBadResponse here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import httpx

from app.clients.http import HttpBackend, raise_for_http_error, translate_http_errors
from app.clients.rerank.pool import DEPENDENCY, check_scores
from app.errors import DependencyBadResponse, DependencyRejected
from app.settings import RerankerSettings
from app.types import Candidate


class _BatchTooLarge(Exception):
    """A server refused a request for holding too many texts (413)."""

    def __init__(self, error: DependencyRejected, sent: int) -> None:
        super().__init__(error.message)
        self.error = error
        self.sent = sent


class HttpReranker(HttpBackend):
    """TEI `POST /rerank` or Cohere-compatible `POST /v1/rerank`.

    A server takes at most so many texts per request (TEI refuses more than its
    `max_client_batch_size` with 413): the candidates go out in requests of at most that many,
    at once, and the scores are merged back in candidate order. The limit is TEI's
    `GET /info` `max_client_batch_size`, read once, when more candidates than the default (32,
    TEI's own default) are to be scored or when a request is refused with 413; 32 where the
    server does not say (a Cohere-style API, or no /info). Scores are per pair, so splitting does
    not change them.
    """

    DEFAULT_BATCH = 32
    dependency = DEPENDENCY

    def __init__(self, settings: RerankerSettings, client: httpx.AsyncClient) -> None:
        super().__init__(client)
        self._s = settings
        self.id = f"http:{settings.api}:{settings.model}@{settings.url}"
        self._batch: int | None = None if settings.api == "tei" else self.DEFAULT_BATCH
        self._batch_lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, s: RerankerSettings) -> HttpReranker:
        assert s.url is not None  # checked by RerankerSettings
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
        return cls(s, httpx.AsyncClient(base_url=s.url, timeout=s.timeout_s, limits=limits))

    async def batch_size(self) -> int:
        """The server's limit on texts per request. Any answer to `GET /info` is remembered (no
        usable `max_client_batch_size` in it: the default); no answer raises like a rerank would,
        and the next call asks again."""
        if self._batch is not None:
            return self._batch
        async with self._batch_lock:
            if self._batch is None:
                with translate_http_errors(DEPENDENCY):
                    resp = await self._client.get("/info")
                self._batch = self.DEFAULT_BATCH
                if resp.status_code == 200:
                    try:
                        limit = resp.json().get("max_client_batch_size")
                    except (ValueError, AttributeError):
                        limit = None
                    if type(limit) is int and limit > 0:
                        self._batch = limit
            return self._batch

    async def score(self, query: str, candidates: Sequence[Candidate]) -> list[float]:
        if not candidates:
            return []
        texts = [c.text for c in candidates]
        known = self._batch is not None
        size = self._batch or self.DEFAULT_BATCH
        if not known and len(texts) > size:
            size, known = await self.batch_size(), True
        try:
            scores = await self._score_in_batches(query, texts, size)
        except _BatchTooLarge as exc:
            if known:
                raise exc.error from None
            # a server whose limit is below the default: ask it once, then split to fit
            size = await self.batch_size()
            if size >= exc.sent:
                raise exc.error from None
            try:
                scores = await self._score_in_batches(query, texts, size)
            except _BatchTooLarge as again:
                raise again.error from None
        return check_scores(scores, len(texts))

    async def _score_in_batches(self, query: str, texts: list[str], size: int) -> list[float]:
        chunks = [texts[i : i + size] for i in range(0, len(texts), size)]
        if len(chunks) == 1:
            return await self._score_chunk(query, texts)
        tasks = [asyncio.ensure_future(self._score_chunk(query, chunk)) for chunk in chunks]
        try:
            parts = await asyncio.gather(*tasks)
        except BaseException:
            # one failed (or the caller gave up): the others' answers are of no use
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return [s for part in parts for s in part]

    async def _score_chunk(self, query: str, texts: list[str]) -> list[float]:
        if self._s.api == "tei":
            path = "/rerank"
            body: dict[str, Any] = {"query": query, "texts": texts, "raw_scores": False, "truncate": True}
        else:
            path = "/v1/rerank"
            body = {"model": self._s.model, "query": query, "documents": texts, "top_n": len(texts)}
        with translate_http_errors(DEPENDENCY):
            resp = await self._client.post(path, json=body)
        if resp.status_code == 413:
            try:
                raise_for_http_error(DEPENDENCY, resp)
            except DependencyRejected as error:
                raise _BatchTooLarge(error, len(texts)) from None
        raise_for_http_error(DEPENDENCY, resp)
        return self._parse(resp, len(texts))

    def _parse(self, resp: httpx.Response, n: int) -> list[float]:
        try:
            data = resp.json()
            rows = data if self._s.api == "tei" else data["results"]
            key = "score" if self._s.api == "tei" else "relevance_score"
            scores: list[float | None] = [None] * n
            for row in rows:
                i, score = row["index"], row[key]
                # strict JSON types: 1.7, true or "0.2" are a broken peer, not values to coerce
                if type(i) is not int or not 0 <= i < n or scores[i] is not None:
                    raise ValueError(f"bad or repeated index {i!r}")
                if type(score) not in (int, float):
                    raise ValueError(f"score {score!r} is not a number")
                scores[i] = float(score)
        except (ValueError, KeyError, TypeError) as exc:
            raise DependencyBadResponse(DEPENDENCY, f"malformed rerank response: {exc}") from exc
        if any(s is None for s in scores):
            raise DependencyBadResponse(DEPENDENCY, "rerank response misses candidates")
        return [s for s in scores if s is not None]
