"""GET (and HEAD) /livez (the process answers), GET /readyz (each dependency pinged), GET /metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import orjson
from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4
from starlette.responses import Response

from app.api.deps import State
from app.errors import RagError

router = APIRouter()
log = logging.getLogger("rag.health")
PING_TIMEOUT_S = 1.0


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


@router.get("/livez")
async def livez() -> Response:
    return _json({"status": "ok"})


@router.head("/livez", include_in_schema=False)
async def livez_head() -> Response:
    """Load balancers that probe with HEAD: the same answer, without the body."""
    return _json({"status": "ok"})


@router.get("/readyz")
async def readyz(state: State) -> Response:
    """200 when every critical dependency (embedder, vector store) answers, else 503.

    Redis and the reranker are listed too, but a failure there only degrades answers (cache
    bypassed, vector order), so it does not take the instance out of rotation.
    """
    checks: dict[str, tuple[bool, Callable[[], Awaitable[None]]]] = {
        "embedder": (True, state.embedder.ping),
        "qdrant": (True, state.store.ping),
    }
    if state.cache is not None:
        checks["redis"] = (False, state.cache.ping)
    if state.reranker is not None:
        checks["reranker"] = (False, state.reranker.ping)

    async def run(fn: Callable[[], Awaitable[None]]) -> str | None:
        try:
            async with asyncio.timeout(PING_TIMEOUT_S):
                await fn()
        except RagError as exc:
            return exc.message
        except TimeoutError:
            return f"no answer within {PING_TIMEOUT_S}s"
        return None

    results = await asyncio.gather(*(run(fn) for _, fn in checks.values()))
    ok = [name for name, err in zip(checks, results, strict=True) if err is None]
    failing = {name: err for name, err in zip(checks, results, strict=True) if err is not None}
    if failing:
        # the reasons name addresses and library errors; /readyz is unauthenticated, so they go
        # to the log, and to the body only where RAG_SERVER__READYZ_DETAIL allows it
        log.warning("not ready", extra={"failing": failing})
        if not state.settings.server.readyz_detail:
            failing = {name: "failing" for name in failing}
    critical_failing = [name for name in failing if checks[name][0]]
    return _json({"ok": ok, "failing": failing}, 503 if critical_failing else 200)


@router.get("/metrics")
async def metrics(state: State) -> Response:
    """This process's metrics, or every worker's summed in multiprocess mode, in the classic text
    format (0.0.4) that every Prometheus version and agent reads."""
    # a breaker moves from OPEN to HALF_OPEN when it is next asked; ask now, so a breaker whose
    # wait is over shows 1 (half-open) even when no request has come since
    if state.breakers is not None:
        state.breakers.refresh()
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_PLAIN_0_0_4)
