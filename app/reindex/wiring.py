"""The reindexer of a running gateway: its backend, its job kind and its metrics."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

from app.clients.embedder import Embedder
from app.jobs import JobRunner, JobStore
from app.observability.tracing import instrument_clients
from app.reindex.edge import EdgeReindex
from app.reindex.service import Backend, Reindexer
from app.resilience.tasks import stop_task
from app.settings import EmbedderSettings

if TYPE_CHECKING:
    from app.lifespan import AppState
    from app.reindex.server import ServerReindex


def reindexer_for(state: AppState, runner: JobRunner) -> Reindexer:
    """A Reindexer of the serving store, run by `runner` as the jobs of kind "reindex"."""
    backend: Backend
    server: ServerReindex | None = None
    if state.settings.qdrant.url:
        from app.clients.vectorstore.server import ServerStore  # qdrant-client: on first use
        from app.reindex.server import ServerReindex

        assert isinstance(state.store.current, ServerStore)
        backend = server = ServerReindex(state.settings, state.store.current)
    else:
        backend = EdgeReindex(state.settings, state.store)
    metrics = state.metrics

    def observe(op: str, outcome: str, seconds: float) -> None:
        metrics.reindex_duration.labels(op, outcome).observe(seconds)
        if outcome == "error":
            metrics.reindex_last_failure.set(time.time())

    reindexer = Reindexer(
        state.settings, state.store, state.embedder, backend, on_swap=state.wrote, observe=observe
    )
    reindexer.save = runner.save  # checks the lease of a shared queue first
    load = reindexer.choice.load

    def load_traced(s: EmbedderSettings) -> Embedder:  # client spans like the serving embedder's
        embedder = load(s)
        instrument_clients(state.tracer_provider, embedder)
        return embedder

    reindexer.choice.load = load_traced
    runner.kinds["reindex"] = reindexer.run
    if server is not None:
        from app.reindex.follow import Follower

        reindexer.follower = Follower(reindexer, server, state.settings.reindex.follow_s)
        if state.store.fence is not None:  # a write after another replica's fence follows first
            state.store.fence.on_epoch = reindexer.follower.check
    return reindexer


def share_fence(state: AppState, stack: AsyncExitStack) -> None:
    """On a Qdrant server with Redis, the write fence covers every replica (fence.py)."""
    s = state.settings
    if s.qdrant.url and s.redis.url and s.reindex.shared_fence:
        from app.clients.vectorstore.fence import SharedFence

        fence = SharedFence.from_settings(s.redis, s.qdrant.collection, s.jobs.lease_s)
        stack.push_async_callback(fence.aclose)
        state.store.fence = fence


def publish_failures(state: AppState, store: JobStore) -> None:
    """The newest failed reindex job's end, from the records (after a restart failed the one it
    interrupted): the failure alert outlives the process that saw it."""
    ends = [j.finished_at or 0.0 for j in store.all() if j.kind == "reindex" and j.state == "failed"]
    state.metrics.reindex_last_failure.set(max(ends, default=0.0))


def follow_switches(state: AppState, stack: AsyncExitStack) -> None:
    """On a Qdrant server, follow the model switches other replicas make (app/reindex/follow.py),
    until the gateway stops."""
    follower = None if state.reindex is None else state.reindex.follower
    if follower is None or follower.interval_s <= 0:
        return
    task = asyncio.create_task(follower.run(), name="follow")

    async def stop() -> None:
        await stop_task(task, 10.0)

    stack.push_async_callback(stop)
