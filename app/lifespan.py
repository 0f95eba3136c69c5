"""Opens every client in order (AsyncExitStack), yields the typed AppState as lifespan state,
and closes them in reverse on shutdown."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.trace import TracerProvider

from app.answer_cache import AnswerCache
from app.chunking import Chunker
from app.clients.cache import RerankCache
from app.clients.embedder.swap import SwappableEmbedder
from app.clients.ratelimit import RateLimiter
from app.clients.redis_client import RedisClient, breaker_config
from app.clients.rerank import Reranker, reranker_from_settings
from app.clients.vectorstore import VectorStore, vectorstore_from_settings
from app.clients.vectorstore.layout import OwnerLock, sweep
from app.clients.vectorstore.swap import SwappableStore
from app.document_in import line_parser
from app.errors import DependencyError
from app.ingest import Document, IngestStats, ingest_documents
from app.job_queue import queue_from_settings
from app.jobs import Job, JobRunner, JobStore, Retention
from app.observability.events import breaker_observer
from app.observability.logging import redact_url
from app.observability.metrics import Metrics
from app.observability.tracing import get_tracer, instrument_clients, setup_tracing
from app.pipeline import Guards, RagPipeline
from app.reindex.embedders import EmbedderChoice
from app.reindex.service import Reindexer
from app.reindex.wiring import follow_switches, publish_failures, reindexer_for, share_fence
from app.resilience import BreakerConfig, BreakerRegistry, Guard, RetryBudget, RetryConfig
from app.security import Authenticator
from app.settings import Settings
from app.snapshots.service import Snapshots, SnapshotService

log = logging.getLogger("rag.lifespan")
STATE_KEY = "rag"


@dataclass(slots=True)
class AppState:
    settings: Settings
    metrics: Metrics
    pipeline: RagPipeline
    embedder: SwappableEmbedder  # the one home of the serving embedder (swapped by a reindex)
    store: SwappableStore  # the one home of the serving store (swapped by a restore)
    reranker: Reranker | None
    cache: RerankCache | None
    tracer_provider: TracerProvider | None
    auth: Authenticator | None = None
    limiter: RateLimiter | None = None
    breakers: BreakerRegistry | None = None
    redis: RedisClient | None = None
    chunker: Chunker | None = None
    jobs: JobRunner | None = None
    answers: AnswerCache | None = None
    snapshots: SnapshotService | None = None
    reindex: Reindexer | None = None
    last_write_at: float | None = None  # wall clock of the last write through this process

    async def wrote(self) -> None:
        """A write through the gateway has happened (documents, jobs): called before it answers,
        so no answer from before it is served again (docs/ARCHITECTURE.md, "Answer cache")."""
        self.last_write_at = time.time()
        if self.answers is not None:
            await self.answers.bump()


def make_guard(
    dependency: str, settings: Settings, metrics: Metrics, breakers: BreakerRegistry, attempt_timeout_s: float
) -> Guard:
    r = settings.resilience
    breaker = breakers.create(
        dependency,
        BreakerConfig(
            window=r.breaker_window,
            min_calls=r.breaker_min_calls,
            failure_rate=r.breaker_failure_rate,
            open_s=r.breaker_open_s,
            half_open_permits=r.breaker_half_open_permits,
        ),
    )
    return Guard(
        dependency,
        breaker,
        RetryConfig(attempts=r.retry_attempts, base_s=r.retry_base_s, cap_s=r.retry_cap_s),
        RetryBudget(r.retry_budget_ratio, r.retry_budget_floor),
        attempt_timeout_s=attempt_timeout_s,
        on_retry=metrics.count_retry,
    )


def _tune_gc(threshold: int, stack: AsyncExitStack) -> None:
    """A young generation of `threshold` objects, for this process, until the app stops.

    A request allocates thousands of objects that reference counting frees at once; with
    Python's 700, the net count still crossed the threshold every few requests, and each young
    collection promoted what was in flight, so that full collections of the whole heap followed
    every few hundred requests: 11% of a hot request's CPU, measured in-process. At 7000 the
    young collections almost stop (README, "Changes that came out of the profiles"). Only cyclic
    garbage waits for a collection, so the cost is at most that many objects more held."""
    if threshold <= 0:
        return
    previous = gc.get_threshold()
    gc.set_threshold(threshold, *previous[1:])
    stack.callback(gc.set_threshold, *previous)


@asynccontextmanager
async def open_state(settings: Settings, metrics: Metrics) -> AsyncIterator[AppState]:
    async with AsyncExitStack() as stack:
        stack.callback(metrics.close)  # last out: a leaving worker's live gauges leave the sums
        _tune_gc(settings.server.gc_threshold, stack)
        provider = setup_tracing()
        if provider is not None:
            # bounded: a down collector must not hang shutdown
            stack.callback(provider.shutdown)
            log.info("tracing on: exporting spans over OTLP/HTTP")

        store = _serving_store(settings, stack)
        # the configured embedder, or the next one if a reindex switched the collection to it
        chosen, loaded = await EmbedderChoice(settings).for_serving(store)
        embedder = SwappableEmbedder(loaded)
        stack.push_async_callback(embedder.aclose)
        reranker = reranker_from_settings(settings.reranker)
        if reranker is not None:
            stack.push_async_callback(reranker.aclose)
        breakers = BreakerRegistry(on_state_change=breaker_observer(metrics))
        # one Redis client (pool and breaker) for the rerank cache and the rate limiter
        redis = None
        if settings.redis.url:
            breaker = breakers.create("redis", breaker_config(settings.redis))
            redis = RedisClient.from_settings(settings.redis, breaker)
        if redis is not None:
            stack.push_async_callback(redis.aclose)
        cache = None if redis is None else RerankCache(redis, settings.redis.ttl_s)

        await _announce(settings, store, cache)
        auth = Authenticator.from_settings(settings)
        auth.announce()
        limiter = RateLimiter(redis, settings.auth.rate_window_s)
        instrument_clients(provider, embedder.current, store.current, reranker, redis)
        guards = Guards(
            embedder=make_guard("embedder", settings, metrics, breakers, settings.embedder.timeout_s),
            qdrant=make_guard("qdrant", settings, metrics, breakers, settings.qdrant.timeout_s),
            reranker=make_guard("reranker", settings, metrics, breakers, settings.reranker.timeout_s),
        )
        for breaker in breakers:
            metrics.set_breaker_state(breaker.name, int(breaker.state))
        pipeline = RagPipeline(
            embedder=embedder,
            store=store,
            reranker=reranker,
            cache=cache,
            guards=guards,
            metrics=metrics,
            tracer=get_tracer(provider),
        )
        stack.push_async_callback(pipeline.drain)
        chunker = Chunker.from_settings(chosen, settings.chunking)
        a = settings.answer_cache
        answers = None
        if a.enabled:
            answers = AnswerCache(redis, settings.qdrant.collection, a.max_bytes, a.ttl_s, a.local_ttl_s)
        state = AppState(
            settings,
            metrics,
            pipeline,
            embedder,
            store,
            reranker,
            cache,
            provider,
            auth,
            limiter,
            breakers,
            redis,
            chunker,
            answers=answers,
        )
        share_fence(state, stack)  # before anything writes: the write fence covers every replica
        state.snapshots = await _snapshots(state)
        state.jobs = await _start_jobs(state)
        stack.push_async_callback(state.jobs.stop)
        follow_switches(state, stack)
        yield state


def _serving_store(settings: Settings, stack: AsyncExitStack) -> SwappableStore:
    """The store, in its swappable home. The embedded engine's collection is owned (locked) by
    this process, and shard directories a kill left behind are removed before it opens."""
    q = settings.qdrant
    if not q.url:
        lock = OwnerLock(q.path, q.collection)
        stack.callback(lock.close)
        for gone in sweep(q.path, q.collection):
            log.warning("removed a shard directory left by an interrupted swap", extra={"path": str(gone)})
    store = SwappableStore(vectorstore_from_settings(q))
    stack.push_async_callback(store.aclose)
    return store


async def _snapshots(state: AppState) -> SnapshotService:
    """The embedded engine's snapshot files, or the Qdrant server's snapshot API."""
    m = state.metrics
    hooks: dict[str, Any] = {
        "on_swap": state.wrote,  # restored data: no answer from before it is served again
        "observe": lambda op, outcome, s: m.snapshot_duration.labels(op, outcome).observe(s),
        "on_newest": m.snapshot_newest.set,
    }
    snaps: SnapshotService
    if state.settings.qdrant.url:
        from app.clients.vectorstore.server import ServerStore
        from app.snapshots.remote import ServerSnapshots

        assert isinstance(state.store.current, ServerStore)
        snaps = ServerSnapshots(state.settings, state.store, state.store.current, **hooks)
    else:
        edge = Snapshots(state.settings, state.store, state.embedder, **hooks)
        edge.sweep()
        snaps = edge
    try:
        await snaps.refresh_newest()
    except DependencyError as exc:  # a server not reachable yet: the gauge waits for the next one
        log.warning("snapshots not listed", extra={"error": exc.message})
    return snaps


async def _start_jobs(state: AppState) -> JobRunner:
    """The ingestion-job worker, with every unfinished job queued again (resumed)."""
    settings, metrics, store, chunker = state.settings, state.metrics, state.store, state.chunker

    async def ingest_batch(docs: list[Document]) -> IngestStats:
        # no index build or verification per batch: once, when the job's last batch is in; a
        # batch waits up to 10 minutes for the shared write fence's Redis before the job fails
        async with store.writing(patience_s=600.0):
            try:
                stats = await ingest_documents(
                    store, state.embedder, docs, chunker=chunker, verify=False, optimize=False
                )
            except BaseException:
                await state.wrote()  # failed part-way: some of it may be written
                raise
            if stats.upserted:
                await state.wrote()  # committed: no answer from before it is served again
        return stats

    async def after(job: Job) -> None:
        async with store.writing():
            await store.optimize()

    def on_change(by_state: dict[str, int], documents: int) -> None:
        metrics.set_jobs(by_state)
        if documents:
            metrics.ingest_documents.inc(documents)

    keys = settings.qdrant.filter_keys
    jobs = JobStore(settings.jobs.dir or settings.qdrant.path.parent / "jobs")
    runner = JobRunner(
        jobs,
        lambda tenant: line_parser(tenant, keys),
        ingest_batch,
        batch_docs=settings.jobs.batch_docs,
        on_change=on_change,
        after=after,
        retention=Retention(
            keep_s=settings.jobs.keep_days * 86400,
            keep_jobs=settings.jobs.keep_jobs,
            # well past the upload's own idle cut-off: a live upload is never taken for dead
            stale_upload_s=max(300.0, 4 * settings.jobs.idle_timeout_s),
            every_s=min(3600.0, settings.jobs.keep_days * 86400 / 4),
        ),
        queue=queue_from_settings(settings, jobs),
    )
    state.reindex = reindexer_for(state, runner)
    runner.paused = lambda: state.embedder.refused is not None  # another replica takes the jobs
    await runner.start()
    publish_failures(state, runner.store)
    return runner


async def _announce(settings: Settings, store: VectorStore, cache: RerankCache | None) -> None:
    """Say at start-up what the gateway serves from, so an operator sees it in the first lines.
    (A collection that no configured embedder made was refused before: EmbedderChoice.)"""
    where: dict[str, Any] = {"collection": store.collection}
    try:
        added = await store.ensure_indexes()
        if added:
            log.warning(
                "payload indexes added to an existing collection",
                extra={"collection": store.collection, "keys": added},
            )
        where["points"] = await store.count()
    except DependencyError as exc:
        log.warning("vector store not ready", extra={"error": exc.message})
    log.info(
        "vector store",
        extra={"backend": "server" if settings.qdrant.url else "embedded", **where},
    )
    if cache is None:
        log.warning("rerank cache off: no Redis URL configured")
        return
    try:
        await cache.ping()
        log.info("rerank cache on", extra={"redis": redact_url(cache.url)})
    except DependencyError:
        log.warning(
            "Redis not reachable: running without the rerank cache until it is",
            extra={"redis": redact_url(cache.url)},
        )
