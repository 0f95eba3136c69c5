"""RagPipeline.run(): embed -> search -> rerank (through the cache), with a span and a stage
timing for each step, and the degradation rules (see docs/ARCHITECTURE.md, "Degradation table").

Embedder or vector store failing is fatal (DependencyError / DeadlineExceeded propagate, the API
answers 503/504). Reranker failing is not: candidates come back in vector order and `degraded`
says why. Redis failing is not either: the cache is bypassed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from opentelemetry import trace

from app.clients.cache import RerankCache, cache_key
from app.clients.embedder import Embedder
from app.clients.rerank import Reranker
from app.clients.vectorstore import VectorStore
from app.errors import DeadlineExceeded, DependencyError
from app.observability.metrics import Metrics
from app.policy import TenantPolicy
from app.resilience import Deadline, Guard
from app.schemas import RagRequest
from app.search import complete_search, distinct_docs_search
from app.types import Candidate

CacheOutcome = Literal["hit", "miss", "bypass", "off"]
log = logging.getLogger("rag.pipeline")


@dataclass(slots=True)
class Ranked:
    candidate: Candidate
    score: float


@dataclass(slots=True)
class RagResult:
    results: list[Ranked]
    reranked: bool
    cache: CacheOutcome
    degraded: list[dict[str, str]] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class Guards:
    embedder: Guard
    qdrant: Guard
    reranker: Guard


class _Call:
    __slots__ = ("abandoned", "task", "waiters")

    def __init__(self, task: asyncio.Task[list[float]]) -> None:
        self.task = task
        self.waiters = 0
        self.abandoned = False


class SingleFlight:
    """Concurrent calls with the same key share one execution (per process).

    The shared call runs in a task of its own: a waiter that leaves (client gone, or its own
    deadline passed) does not cancel it for the others; when the last waiter leaves, it is
    cancelled, so nobody's dependency call outlives every client that wanted it.
    """

    def __init__(self) -> None:
        self._calls: dict[str, _Call] = {}

    async def do(
        self, key: str, fn: Callable[[], Awaitable[list[float]]], timeout: float | None = None
    ) -> list[float]:
        """fn()'s result, shared with concurrent callers of the same key.

        A caller that joins a call started by another waits at most `timeout`, then gets
        TimeoutError (the call goes on for the others). The caller that starts the call is
        bounded by fn itself (the Guard's deadline), so its outcome is never raced by a timer.
        """
        loop = asyncio.get_running_loop()
        until = None if timeout is None else loop.time() + timeout
        for _ in range(3):
            call = self._calls.get(key)
            mine = call is None or call.abandoned
            if call is None or call.abandoned:
                call = self._start(key, fn)
            call.waiters += 1
            try:
                async with asyncio.timeout_at(None if mine else until):
                    # shield: one waiter leaving must not cancel the shared call
                    return await asyncio.shield(call.task)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if call.task.cancelled() and task is not None and not task.cancelling():
                    continue  # the call was abandoned under us, not by us: start again
                raise
            finally:
                call.waiters -= 1
                if call.waiters == 0 and not call.task.done():
                    call.abandoned = True
                    call.task.cancel()
        raise RuntimeError(f"shared call for {key!r} was cancelled from outside, again and again")

    def _start(self, key: str, fn: Callable[[], Awaitable[list[float]]]) -> _Call:
        async def run() -> list[float]:
            return await fn()

        call = _Call(asyncio.ensure_future(run()))
        self._calls[key] = call

        def done(task: asyncio.Task[list[float]]) -> None:
            if self._calls.get(key) is call:
                del self._calls[key]
            if not task.cancelled():
                task.exception()  # retrieved: its waiters may all be gone

        call.task.add_done_callback(done)
        return call


class RagPipeline:
    def __init__(
        self,
        *,
        embedder: Embedder,
        store: VectorStore,
        reranker: Reranker | None,
        cache: RerankCache | None,
        guards: Guards,
        metrics: Metrics,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.embedder = embedder
        self.store = store
        self.reranker = reranker
        self.cache = cache
        self.guards = guards
        self.metrics = metrics
        self.tracer = tracer or trace.get_tracer("rag-gateway")
        self._single_flight = SingleFlight()

    async def run(self, req: RagRequest, policy: TenantPolicy, deadline: Deadline) -> RagResult:
        """Answer `req`, already checked against `policy` at the edge (k, filter keys)."""
        tenant = policy.tenant
        filters = req.filters()
        ef = policy.search_ef(req.ef)
        timings: dict[str, float] = {}
        t_start = time.perf_counter()

        # attributes known up front go in with the span (one pass through the SDK's attribute
        # checks and lock instead of one per attribute)
        with self.tracer.start_as_current_span("embed", attributes={"rag.embedder": self.embedder.id}):
            t0 = time.perf_counter()
            vector = await self.guards.embedder.call(lambda: self.embedder.embed(req.q), deadline)
            timings["embed"] = self._stage("embed", t0)

        with self.tracer.start_as_current_span("search") as span:
            t0 = time.perf_counter()

            # one guarded call per search: the index search, the count and an exact fallback
            # share one breaker permit and one outcome
            def search(limit: int) -> Awaitable[list[Candidate]]:
                return self.guards.qdrant.call(
                    lambda: complete_search(
                        self.store,
                        vector,
                        limit,
                        ef,
                        tenant,
                        filters,
                        on_fallback=self.metrics.count_exact_fallback,
                    ),
                    deadline,
                )

            if req.distinct_docs:
                candidates = await distinct_docs_search(search, req.k, req.n)
            else:
                candidates = await search(req.k)
            timings["search"] = self._stage("search", t0)
            span.set_attributes({"rag.k": req.k, "rag.ef": ef, "rag.candidates": len(candidates)})

        result = RagResult(
            results=[Ranked(c, c.score) for c in candidates], reranked=False, cache="off", timings_ms=timings
        )
        if req.rerank and self.reranker is not None and candidates:
            with self.tracer.start_as_current_span("rerank") as span:
                t0 = time.perf_counter()
                await self._rerank(req.q, tenant, candidates, deadline, result)
                timings["rerank"] = self._stage("rerank", t0)
                attrs: dict[str, str | bool] = {"rag.cache": result.cache, "rag.reranked": result.reranked}
                if result.degraded:
                    attrs["rag.degraded_reason"] = result.degraded[0]["reason"]
                span.set_attributes(attrs)
        else:
            timings["rerank"] = 0.0
        del result.results[req.n :]
        timings["total"] = round((time.perf_counter() - t_start) * 1000, 3)
        return result

    def _stage(self, stage: str, t0: float) -> float:
        dt = time.perf_counter() - t0
        self.metrics.observe_stage(stage, dt)
        return round(dt * 1000, 3)

    async def _rerank(
        self, query: str, tenant: str, candidates: list[Candidate], deadline: Deadline, result: RagResult
    ) -> None:
        assert self.reranker is not None
        reranker = self.reranker
        key = cache_key(reranker.id, tenant, query, candidates)
        scores = await self._cache_get(key, result)
        if scores is None or len(scores) != len(candidates):
            store = result.cache == "miss"

            async def score() -> list[float]:
                computed = await self.guards.reranker.call(
                    lambda: self._score(reranker, query, candidates), deadline
                )
                if store:
                    # stored before the flight ends: a request that comes after it finds the
                    # scores in Redis instead of missing in the gap a background write left
                    await self._cache_set(key, computed)
                return computed

            try:
                scores = await self._single_flight.do(
                    key,
                    score,
                    # a follower is bounded by its own deadline, not the leader's
                    timeout=deadline.remaining(),
                )
            except (DependencyError, DeadlineExceeded, TimeoutError) as exc:
                reason = exc.reason if isinstance(exc, DependencyError) else "deadline"
                self._degrade(result, reason)
                return  # vector order stands; nothing is cached
            except Exception:
                # a bug on our side of the reranker call: still an answer, never a 500
                log.exception("reranker call failed unexpectedly")
                self._degrade(result, "error")
                return
        ranked = sorted(
            (Ranked(c, s) for c, s in zip(candidates, scores, strict=True)),
            key=lambda r: r.score,
            reverse=True,
        )
        result.results = ranked
        result.reranked = True

    def _degrade(self, result: RagResult, reason: str) -> None:
        result.degraded.append({"component": "reranker", "reason": reason})
        self.metrics.count_degraded("reranker", reason)

    async def _score(self, reranker: Reranker, query: str, candidates: list[Candidate]) -> list[float]:
        return await reranker.score(query, candidates)  # checked there: one finite score per candidate

    async def _cache_get(self, key: str, result: RagResult) -> list[float] | None:
        if self.cache is None:
            result.cache = "off"
            return None
        # no span of its own: the Redis client span (a child of `rerank`) times the call, and
        # `rerank` carries the outcome as rag.cache
        t0 = time.perf_counter()
        try:
            scores = await self.cache.get(key)
        except DependencyError:
            result.cache = "bypass"
            return None
        finally:
            self._stage("cache", t0)
        result.cache = "hit" if scores is not None else "miss"
        (self.metrics.cache_hit if scores is not None else self.metrics.cache_miss).inc()
        return scores

    async def _cache_set(self, key: str, scores: list[float]) -> None:
        assert self.cache is not None
        # best effort: on failure the next request recomputes; the Redis client span (a child of
        # `rerank`) times it
        with contextlib.suppress(DependencyError):
            await self.cache.set(key, scores)

    async def drain(self) -> None:
        """Nothing runs in the background: a rerank-cache write ends inside its single flight,
        before the answer. Kept for shutdown and tests, which call it."""


def as_dict(r: Ranked) -> dict[str, Any]:
    c = r.candidate
    payload = c.payload.copy()  # a copy and one pop: ~6x cheaper than a filtering comprehension
    payload.pop("text", None)
    return {"id": c.id, "score": r.score, "vector_score": c.score, "text": c.text, "payload": payload}
