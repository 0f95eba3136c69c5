"""The shared Redis client's error table, row by row, and the breaker registry."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis import exceptions as rx
from support.app import make_settings, running_app
from support.clock import FakeClock

from app.clients.redis_client import translate_redis_error
from app.errors import (
    DependencyBadResponse,
    DependencyError,
    DependencyTimeout,
    DependencyUnavailable,
)
from app.resilience import BreakerConfig, BreakerRegistry, BreakerState


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (rx.TimeoutError("read timed out"), DependencyTimeout),
        (TimeoutError(), DependencyTimeout),
        (rx.ConnectionError("refused"), DependencyUnavailable),
        (rx.BusyLoadingError("loading"), DependencyUnavailable),
        (ConnectionResetError(), DependencyUnavailable),
        (rx.NoScriptError("NOSCRIPT"), DependencyBadResponse),
        (rx.ResponseError("WRONGTYPE"), DependencyBadResponse),
        (rx.DataError("bad arg"), DependencyBadResponse),
        (rx.RedisError("other"), DependencyUnavailable),
    ],
)
def test_every_row_of_the_redis_error_table(exc: Exception, expected: type[DependencyError]) -> None:
    err = translate_redis_error(exc)
    assert type(err) is expected
    assert err.dependency == "redis"
    assert type(exc).__name__ in err.message
    # every row counts against the breaker: these are Redis's failures, never the caller's
    assert err.counts_as_failure


def test_registry_iterates_its_breakers_and_refresh_half_opens_them() -> None:
    clock = FakeClock(0.0)
    changes: list[tuple[str, BreakerState]] = []
    registry = BreakerRegistry(on_state_change=lambda n, s: changes.append((n, s)), clock=clock)
    a = registry.create("a", BreakerConfig(window=1, min_calls=1, open_s=2.0))
    b = registry.create("b", BreakerConfig())
    assert [x.name for x in registry] == ["a", "b"]
    with pytest.raises(ValueError, match="exists already"):
        registry.create("a", BreakerConfig())

    a.on_failure(a.acquire())
    assert changes == [("a", BreakerState.OPEN)]
    clock.now = 2.0
    registry.refresh()  # nobody asked "a" since it opened; refresh does
    assert changes == [("a", BreakerState.OPEN), ("a", BreakerState.HALF_OPEN)]
    assert b.state is BreakerState.CLOSED


async def test_the_gateway_shares_one_redis_client_and_lists_every_breaker(
    model_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    async with running_app(make_settings(model_dir, tmp_path / "q", redis_url)) as (client, app):
        state = app.state.rag
        assert state.cache is not None and state.limiter is not None
        assert state.cache.redis is state.limiter.redis is state.redis
        assert {b.name for b in state.breakers} == {"embedder", "qdrant", "reranker", "redis"}
        assert state.redis.breaker is next(b for b in state.breakers if b.name == "redis")
        metrics = (await client.get("/metrics")).text
        for name in ("embedder", "qdrant", "reranker", "redis"):
            assert f'rag_circuit_breaker_state{{dependency="{name}"}} 0.0' in metrics


async def test_without_a_redis_url_there_is_no_client_and_no_redis_breaker(
    model_dir: Path, tmp_path: Path
) -> None:
    async with running_app(make_settings(model_dir, tmp_path / "q", None)) as (client, app):
        state = app.state.rag
        assert state.redis is None and state.cache is None
        assert state.limiter is not None and state.limiter.redis is None
        assert {b.name for b in state.breakers} == {"embedder", "qdrant", "reranker"}
        assert 'dependency="redis"' not in (await client.get("/metrics")).text
