"""The rerank cache in Redis (DESIGN §5).

Key: `rerank:v1:` + sha256(reranker id, tenant, normalised query, candidate ids and content
hashes in order). Value: the scores as packed float64. Every operation is bounded by
`timeout_s`; a failing Redis trips a small circuit breaker so that while it is down the cache is
skipped without a connection attempt per request. Cache errors never fail a request: callers
get CacheUnavailable and answer with `cache: "bypass"`.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from app.errors import CircuitOpen, DependencyUnavailable
from app.resilience import CircuitBreaker
from app.settings import RedisSettings
from app.types import Candidate

DEPENDENCY = "redis"
KEY_PREFIX = "rerank:v1:"
T = TypeVar("T")


class CacheUnavailable(DependencyUnavailable):
    pass


def cache_key(reranker_id: str, tenant: str, query: str, candidates: Sequence[Candidate]) -> str:
    h = hashlib.sha256()
    for part in (reranker_id, tenant, query):
        h.update(part.encode())
        h.update(b"\x00")
    for c in candidates:
        h.update(c.id.encode())
        h.update(b"\x01")
        h.update(str(c.payload.get("content_hash", "")).encode())
        h.update(b"\x00")
    return KEY_PREFIX + h.hexdigest()


def pack(scores: Sequence[float]) -> bytes:
    return struct.pack(f"<{len(scores)}d", *scores)


def unpack(data: bytes) -> list[float]:
    if len(data) % 8:
        raise ValueError("cached value is not a float64 array")
    return list(struct.unpack(f"<{len(data) // 8}d", data))


class RerankCache:
    def __init__(self, client: Redis, settings: RedisSettings, breaker: CircuitBreaker) -> None:
        self._client = client
        self._s = settings
        self.breaker = breaker
        self.url = settings.url

    @classmethod
    def from_settings(cls, s: RedisSettings, breaker: CircuitBreaker) -> RerankCache | None:
        if not s.url:
            return None
        client = Redis.from_url(
            s.url,
            socket_timeout=s.timeout_s,
            socket_connect_timeout=s.connect_timeout_s,
            max_connections=s.max_connections,
            retry=Retry(NoBackoff(), 0),  # no hidden retries: one bounded attempt per operation
        )
        return cls(client, s, breaker)

    async def _op(self, fn: Callable[[], Awaitable[T]]) -> T:
        try:
            permit = self.breaker.acquire()
        except CircuitOpen as exc:
            raise CacheUnavailable(DEPENDENCY, "redis circuit open") from exc
        try:
            # redis-py's socket timeout is per read; this bounds the whole operation (connect,
            # handshake, write, read). A cancelled command disconnects its connection
            # (redis-py >= 5.0.1), so no reply is ever read by the next command.
            async with asyncio.timeout(self._s.timeout_s):
                result = await fn()
        except (RedisError, OSError, TimeoutError) as exc:
            self.breaker.on_failure(permit)
            raise CacheUnavailable(DEPENDENCY, f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            self.breaker.on_ignored(permit)
            raise
        self.breaker.on_success(permit)
        return result

    async def get(self, key: str) -> list[float] | None:
        raw: Any = await self._op(lambda: self._client.get(key))
        if raw is None:
            return None
        try:
            return unpack(raw)
        except (ValueError, struct.error):
            return None  # a foreign or corrupt value is a miss, and gets overwritten

    async def set(self, key: str, scores: Sequence[float]) -> None:
        await self._op(lambda: self._client.set(key, pack(scores), ex=self._s.ttl_s))

    async def ping(self) -> None:
        await self._op(lambda: self._client.ping())

    async def aclose(self) -> None:
        await self._client.aclose()
