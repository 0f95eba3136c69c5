"""The per-key rate limiter: an exact sliding window (at most `limit` requests in any `window_s`
seconds), kept in Redis by one Lua script so that every gateway replica shares it and the
check-and-record is atomic.

Redis down, slow or unconfigured never means unlimited and never a 500: a local in-process
window of the same shape decides instead. It shadows every allowed request even while Redis
answers, so when Redis goes away mid-window the local window already knows the recent
requests of this process. Redis is reached through the shared RedisClient: each call is bounded
by `RAG_REDIS__TIMEOUT_S + RAG_REDIS__CONNECT_TIMEOUT_S`, and once the Redis breaker is open the
limiter decides locally without paying a Redis timeout per request.

Time comes from the injected clock (wall clock, milliseconds) and is passed to the script, so
replicas must keep their clocks in sync (NTP), and tests can move time without sleeping.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from app.clients.redis_client import DEPENDENCY, RedisClient, RedisUnavailable, breaker_config
from app.resilience import CircuitBreaker
from app.settings import RedisSettings

log = logging.getLogger("rag.ratelimit")
KEY_PREFIX = "ratelimit:v1:"

# KEYS[1] the key's sorted set of request times (ms); ARGV: now_ms, window_ms, limit, member.
# Entries older than the window are dropped; the request is recorded only if it is allowed,
# so a client hammering while blocked does not push its own reset further out.
# Returns {allowed 0/1, requests in the window, ms until the oldest one leaves the window}.
SLIDING_WINDOW_LUA = """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local allowed = 0
if count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  count = count + 1
  allowed = 1
end
local reset = 0
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if oldest[2] then
  reset = tonumber(oldest[2]) + window - now
  redis.call('PEXPIRE', KEYS[1], window)
end
return {allowed, count, reset}
"""


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_s: float  # until the oldest request in the window leaves it (a slot frees up)
    source: Literal["redis", "local"]

    def headers(self) -> dict[str, str]:
        reset = max(0, math.ceil(self.reset_s))
        out = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(reset),
        }
        if not self.allowed:
            out["Retry-After"] = str(max(1, reset))
        return out


class LocalWindow:
    """The same sliding window in process memory: one deque of request times per key."""

    def __init__(self) -> None:
        self._hits: dict[str, deque[float]] = {}

    def _window(self, key: str, now: float, window_s: float) -> deque[float]:
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - window_s:
            hits.popleft()
        return hits

    def hit(self, key: str, limit: int, window_s: float, now: float) -> Decision:
        hits = self._window(key, now, window_s)
        allowed = len(hits) < limit
        if allowed:
            hits.append(now)
        reset = hits[0] + window_s - now if hits else 0.0
        return Decision(allowed, limit, max(0, limit - len(hits)), reset, "local")

    def record(self, key: str, limit: int, window_s: float, now: float) -> None:
        """Shadow a request Redis allowed; keeps at most `limit` entries per key."""
        hits = self._window(key, now, window_s)
        hits.append(now)
        while len(hits) > limit:
            hits.popleft()


class RateLimiter:
    def __init__(
        self,
        redis: RedisClient | None,
        window_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.window_s = window_s
        self.clock = clock
        self.local = LocalWindow()
        self._script: Any = redis.client.register_script(SLIDING_WINDOW_LUA) if redis is not None else None
        self._bound_s = None if redis is None else redis.timeout_s + redis.connect_timeout_s
        self._on_redis = True  # for logging the switch to and from the local window once

    @classmethod
    def from_settings(
        cls, s: RedisSettings, window_s: float, clock: Callable[[], float] = time.time
    ) -> RateLimiter:
        """A limiter on a Redis client of its own (tools and tests). The gateway builds one
        RedisClient and shares it with the rerank cache."""
        breaker = CircuitBreaker(DEPENDENCY, breaker_config(s))
        return cls(RedisClient.from_settings(s, breaker), window_s, clock)

    async def hit(self, key: str, limit: int) -> Decision:
        """Count one request of `key` against `limit` per window and say whether it may go on."""
        now = self.clock()
        decision = await self._redis_hit(key, limit, now)
        if decision is None:
            return self.local.hit(key, limit, self.window_s, now)
        if decision.allowed:
            self.local.record(key, limit, self.window_s, now)
        return decision

    async def _redis_hit(self, key: str, limit: int, now: float) -> Decision | None:
        if self._script is None or self.redis is None:
            return None
        window_ms = max(1, round(self.window_s * 1000))
        member = f"{round(now * 1000)}-{secrets.token_hex(6)}"
        args = [round(now * 1000), window_ms, limit, member]
        try:
            raw = await self.redis.call(
                lambda _: self._script(keys=[KEY_PREFIX + key], args=args), self._bound_s
            )
            allowed, count, reset_ms = (int(v) for v in raw)
        except (RedisUnavailable, ValueError, TypeError) as exc:
            if self._on_redis:
                self._on_redis = False
                log.warning(
                    "rate limiter: Redis unavailable, using the local window",
                    extra={"error": type(exc.__cause__ or exc).__name__},
                )
            return None
        if not self._on_redis:
            self._on_redis = True
            log.info("rate limiter: back on Redis")
        return Decision(bool(allowed), limit, max(0, limit - count), reset_ms / 1000, "redis")

    async def ping(self) -> None:
        if self.redis is not None:
            await self.redis.ping()

    async def aclose(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
