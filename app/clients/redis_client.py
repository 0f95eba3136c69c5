"""One Redis client for everything the gateway keeps in Redis (the rerank cache and the rate
limiter): one connection pool, one circuit breaker, every operation bounded by the same Guard
machinery as the other dependencies, and one table that turns redis-py's exceptions into domain
errors. See docs/ARCHITECTURE.md, "Resilience".

No retries: both users have a fallback (a cache miss, the local rate-limit window) that is
cheaper than a second attempt, and redis-py's own retries are switched off so that one operation
is one bounded attempt. While Redis is down the breaker refuses without a connection attempt.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from app.errors import (
    CircuitOpen,
    DeadlineExceeded,
    DependencyBadResponse,
    DependencyError,
    DependencyTimeout,
    DependencyUnavailable,
)
from app.resilience import BreakerConfig, CircuitBreaker, Deadline, Guard, RetryBudget, RetryConfig
from app.settings import RedisSettings

DEPENDENCY = "redis"
T = TypeVar("T")


class RedisUnavailable(DependencyUnavailable):
    """Any failed Redis operation, as its users see it: the cause says what happened (the
    library's exception, a TimeoutError, or CircuitOpen when no attempt was made)."""


def translate_redis_error(exc: Exception) -> DependencyError:
    """redis-py's exceptions as domain errors, most specific first (redis-py's TimeoutError and
    ConnectionError are RedisError subclasses, and ConnectionError is also an OSError)."""
    name = type(exc).__name__
    if isinstance(exc, (rx.TimeoutError, TimeoutError)):
        return DependencyTimeout(DEPENDENCY, f"{name}: {exc}")
    if isinstance(exc, (rx.ConnectionError, OSError)):
        return DependencyUnavailable(DEPENDENCY, f"{name}: {exc}")
    if isinstance(exc, (rx.ResponseError, rx.DataError)):
        # Redis answered, with an error for this command: a broken script or a wrong type
        return DependencyBadResponse(DEPENDENCY, f"{name}: {exc}")
    return DependencyUnavailable(DEPENDENCY, f"{name}: {exc}")


def breaker_config(s: RedisSettings) -> BreakerConfig:
    return BreakerConfig(
        window=s.breaker_window,
        min_calls=s.breaker_min_calls,
        failure_rate=s.breaker_failure_rate,
        open_s=s.breaker_open_s,
        half_open_permits=1,
    )


class RedisClient:
    def __init__(self, client: Redis, settings: RedisSettings, breaker: CircuitBreaker) -> None:
        self._client = client
        self.url = settings.url
        self.timeout_s = settings.timeout_s
        self.connect_timeout_s = settings.connect_timeout_s
        self.breaker = breaker
        # the longest bound any caller asks for; a timeout always counts against the breaker,
        # since callers pass fixed bounds of their own, never a client's short deadline
        self._guard = Guard(
            DEPENDENCY,
            breaker,
            RetryConfig(attempts=0),
            RetryBudget(0.0, 0),
            attempt_timeout_s=settings.timeout_s + settings.connect_timeout_s,
            timeout_failure_fraction=0.0,
        )

    @classmethod
    def from_settings(cls, s: RedisSettings, breaker: CircuitBreaker) -> RedisClient | None:
        """None when no Redis URL is configured."""
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

    @property
    def client(self) -> Redis:
        """The library client, for registering scripts and for tracing instrumentation."""
        return self._client

    async def call(self, op: Callable[[Redis], Awaitable[T]], bound_s: float | None = None) -> T:
        """Run one Redis operation within `bound_s` (default `timeout_s`), which covers connect,
        write and read. redis-py's socket timeout is per read; a cancelled command disconnects its
        connection (redis-py >= 5.0.1), so no reply is ever read by the next command.

        Raises RedisUnavailable, caused by the library's exception, a TimeoutError or CircuitOpen.
        """

        async def attempt() -> T:
            try:
                return await op(self._client)
            except rx.RedisError as exc:
                raise translate_redis_error(exc) from exc
            except OSError as exc:
                raise translate_redis_error(exc) from exc

        try:
            return await self._guard.call(attempt, Deadline(bound_s or self.timeout_s))
        except CircuitOpen as exc:
            raise RedisUnavailable(DEPENDENCY, "circuit open") from exc
        except (DependencyError, DeadlineExceeded) as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, Exception) else exc
            raise RedisUnavailable(DEPENDENCY, exc.message.removeprefix(f"{DEPENDENCY}: ")) from cause

    async def ping(self) -> None:
        await self.call(lambda r: r.ping())

    async def aclose(self) -> None:
        await self._client.aclose()
