"""The reindexer of a running gateway: its backend, its job kind and its metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.jobs import JobRunner
from app.reindex.edge import EdgeReindex
from app.reindex.service import Backend, Reindexer

if TYPE_CHECKING:
    from app.lifespan import AppState


def reindexer_for(state: AppState, runner: JobRunner) -> Reindexer:
    """A Reindexer of the serving store, run by `runner` as the jobs of kind "reindex"."""
    backend: Backend = EdgeReindex(state.settings, state.store)
    reindexer = Reindexer(state.settings, state.store, state.embedder, backend, on_swap=state.wrote)
    reindexer.save = runner.store.save
    runner.kinds["reindex"] = reindexer.run
    return reindexer
