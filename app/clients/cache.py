"""The rerank cache in Redis (docs/ARCHITECTURE.md, "Request path").

Key: `rerank:v1:` + sha256(reranker id, tenant, normalised query, candidate ids and content
hashes in order; a point without a `content_hash` adds the hash of its text, so that a point id
that keeps its id across a restore but not its text never finds the old scores). Value: the
scores as packed float64. Every operation goes through the shared RedisClient: bounded by
`timeout_s`, behind the Redis breaker, so that while Redis is down the cache is skipped without
a connection attempt per request. Cache errors never fail a request: callers get
RedisUnavailable and answer with `cache: "bypass"`.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from typing import Any

from app.clients.redis_client import RedisClient
from app.resilience import CircuitBreaker
from app.settings import RedisSettings
from app.types import Candidate

KEY_PREFIX = "rerank:v1:"


def cache_key(reranker_id: str, tenant: str, query: str, candidates: Sequence[Candidate]) -> str:
    # one string hashed at once: the same bytes as hashing each part in turn, with one hash
    # update instead of four per candidate
    parts = [reranker_id, "\x00", tenant, "\x00", query, "\x00"]
    for c in candidates:
        digest = c.payload.get("content_hash") or hashlib.sha256(c.text.encode()).hexdigest()
        parts += (c.id, "\x01", str(digest), "\x00")
    return KEY_PREFIX + hashlib.sha256("".join(parts).encode()).hexdigest()


def pack(scores: Sequence[float]) -> bytes:
    return struct.pack(f"<{len(scores)}d", *scores)


def unpack(data: bytes) -> list[float]:
    if len(data) % 8:
        raise ValueError("cached value is not a float64 array")
    return list(struct.unpack(f"<{len(data) // 8}d", data))


class RerankCache:
    """Scores by key in Redis, through the shared RedisClient (its breaker and bounds)."""

    def __init__(self, redis: RedisClient, ttl_s: int) -> None:
        self.redis = redis
        self.ttl_s = ttl_s

    @classmethod
    def from_settings(cls, s: RedisSettings, breaker: CircuitBreaker) -> RerankCache | None:
        """A cache on a Redis client of its own (tools and tests); None without a Redis URL.
        The gateway builds one RedisClient and shares it with the rate limiter."""
        redis = RedisClient.from_settings(s, breaker)
        return None if redis is None else cls(redis, s.ttl_s)

    @property
    def breaker(self) -> CircuitBreaker:
        return self.redis.breaker

    @property
    def url(self) -> str | None:
        return self.redis.url

    async def get(self, key: str) -> list[float] | None:
        raw: Any = await self.redis.call(lambda r: r.get(key))
        if raw is None:
            return None
        try:
            return unpack(raw)
        except (ValueError, struct.error):
            return None  # a foreign or corrupt value is a miss, and gets overwritten

    async def set(self, key: str, scores: Sequence[float]) -> None:
        await self.redis.call(lambda r: r.set(key, pack(scores), ex=self.ttl_s))

    async def ping(self) -> None:
        await self.redis.ping()

    async def aclose(self) -> None:
        await self.redis.aclose()
