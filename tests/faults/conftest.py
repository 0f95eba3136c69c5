"""Fixtures for the fault tests: the reranker test server (one per session, reset per test),
fault proxies (closed after each test) in front of Redis and the reranker, and settings for a
gateway that reaches both through them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support import app as support_app
from support.app import merge_groups
from support.net import free_port

from app.settings import Settings

from .proxy import FaultProxy
from .reranker_server import RerankerServer


@pytest.fixture
def running_app() -> Any:
    """The app with its lifespan behind an ASGI httpx client (tests/support/app.py)."""
    return support_app.running_app


@pytest.fixture(scope="session")
def reranker_server() -> Iterator[RerankerServer]:
    server = RerankerServer().start(free_port())
    yield server
    server.stop()


@pytest.fixture
def reranker(reranker_server: RerankerServer) -> RerankerServer:
    reranker_server.new_test()
    return reranker_server


@pytest.fixture
def proxies() -> Iterator[Callable[[int], FaultProxy]]:
    made: list[FaultProxy] = []

    def make(upstream_port: int) -> FaultProxy:
        proxy = FaultProxy(upstream_port).start()
        made.append(proxy)
        return proxy

    yield make
    for p in made:
        p.stop()


@pytest.fixture
def redis_proxy(redis_url: str, redis_server: Any, proxies: Callable[[int], FaultProxy]) -> FaultProxy:
    return proxies(redis_server.port)


@pytest.fixture
def reranker_proxy(reranker: RerankerServer, proxies: Callable[[int], FaultProxy]) -> FaultProxy:
    return proxies(reranker.port)


@pytest.fixture
def fault_settings(
    settings_factory: Any, redis_proxy: FaultProxy, reranker_proxy: FaultProxy, reranker: RerankerServer
) -> Callable[..., Settings]:
    """Settings whose Redis and (http, TEI) reranker are reached through fault proxies; short
    deadline, timeouts and breaker wait so that every fault plays out in about a second."""
    defaults: dict[str, dict[str, Any]] = {
        "server": {"deadline_s": 1.0},
        "redis": {"url": f"redis://{redis_proxy.url}/0"},
        "reranker": {
            "kind": "http",
            "url": f"http://{reranker_proxy.url}{reranker.prefix}",
            "timeout_s": 0.3,
        },
        "resilience": {
            "retry_attempts": 1,
            "retry_base_s": 0.01,
            "retry_cap_s": 0.05,
            "breaker_open_s": 1.0,
        },
    }

    def make(**groups: dict[str, Any]) -> Settings:
        settings: Settings = settings_factory(**merge_groups(defaults, groups))
        return settings

    return make
