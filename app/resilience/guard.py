"""Deadline, RetryBudget and the Guard that composes them with a circuit breaker around one
dependency call (deadline -> circuit breaker -> retry with full jitter). See
docs/ARCHITECTURE.md, "Resilience".

No I/O here: clocks, sleeps and the jitter's random source are injected, so every boundary is
testable with a fake clock (tests/test_resilience_unit.py).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.stop import stop_any, stop_base
from tenacity.wait import wait_exponential, wait_random_exponential

from app.errors import DeadlineExceeded, DependencyError, DependencyTimeout
from app.resilience.breaker import BreakerState, CircuitBreaker

T = TypeVar("T")
Clock = Callable[[], float]


class Deadline:
    """An absolute point on the monotonic clock by which the whole request must be answered."""

    __slots__ = ("_clock", "expires_at")

    def __init__(self, seconds: float, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self.expires_at = clock() + seconds

    def remaining(self) -> float:
        return max(0.0, self.expires_at - self._clock())

    @property
    def expired(self) -> bool:
        return self._clock() >= self.expires_at


class RetryBudget:
    """Retries allowed in a sliding time window: `floor + ratio * calls`.

    A dependency that fails every call therefore sees at most (1 + ratio) times the load plus
    the floor, instead of (1 + retries) times.
    """

    def __init__(
        self, ratio: float, floor: int, window_s: float = 10.0, clock: Clock = time.monotonic
    ) -> None:
        self.ratio = ratio
        self.floor = floor
        self.window_s = window_s
        self._clock = clock
        self._calls: deque[float] = deque()
        self._retries: deque[float] = deque()

    def _trim(self, now: float) -> None:
        edge = now - self.window_s
        for q in (self._calls, self._retries):
            while q and q[0] <= edge:
                q.popleft()

    def record_call(self) -> None:
        now = self._clock()
        self._trim(now)
        self._calls.append(now)

    def try_spend(self) -> bool:
        now = self._clock()
        self._trim(now)
        if len(self._retries) < self.floor + self.ratio * len(self._calls):
            self._retries.append(now)
            return True
        return False


@dataclass(frozen=True, slots=True)
class RetryConfig:
    attempts: int = 2  # retries after the first attempt
    base_s: float = 0.02
    cap_s: float = 0.2


class wait_full_jitter(wait_random_exponential):  # named like tenacity's own waits
    """tenacity's full jitter (the n-th retry, n = 0, 1, ..., sleeps uniform(0, min(cap, base *
    2**n))) drawing from an injected random source, so that tests can seed it."""

    def __init__(self, base_s: float, cap_s: float, rng: random.Random | None = None) -> None:
        super().__init__(multiplier=base_s, max=cap_s)
        self.rng = rng or random.Random()

    def __call__(self, retry_state: RetryCallState) -> float:
        high = wait_exponential.__call__(self, retry_state)  # the interval, computed by tenacity
        return self.rng.uniform(self.min, high)


class Guard:
    """deadline -> circuit breaker -> retry (full jitter, budgeted) around one dependency.

    One attempt is bounded by min(attempt_timeout_s, time left before the deadline). A timeout
    counts as a breaker failure only when the attempt had at least `timeout_failure_fraction`
    of its own timeout: a caller who asked for a tiny deadline must not open the breaker for
    everyone else.
    """

    def __init__(
        self,
        dependency: str,
        breaker: CircuitBreaker,
        retry: RetryConfig,
        budget: RetryBudget,
        attempt_timeout_s: float,
        on_retry: Callable[[str], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        timeout_failure_fraction: float = 0.5,
    ) -> None:
        self.dependency = dependency
        self.breaker = breaker
        self.retry = retry
        self.budget = budget
        self.attempt_timeout_s = attempt_timeout_s
        self.timeout_failure_fraction = timeout_failure_fraction
        self._on_retry = on_retry
        self._sleep = sleep
        self._wait = wait_full_jitter(retry.base_s, retry.cap_s, rng)

    async def call(self, op: Callable[[], Awaitable[T]], deadline: Deadline) -> T:
        """Run `op` under the breaker, retrying transient failures while time and budget last.

        Raises DependencyError (CircuitOpen, DependencyTimeout, ...) or DeadlineExceeded.
        CancelledError passes straight through: never retried, never counted.
        """
        first = [True]
        # The first attempt runs without tenacity's machinery (most calls succeed, on a path
        # taken by every request). Only a transient failure hands over to tenacity, which
        # starts by replaying that failure as its own first attempt: from there on the stop
        # conditions, the budget, the jitter draws and the retry count are exactly tenacity's.
        try:
            return await self._attempt(op, deadline, first)
        except BaseException as exc:
            if self.retry.attempts == 0 or not _is_transient(exc):
                raise
            failed: list[BaseException] = [exc]

        async def attempt() -> T:
            if failed:
                raise failed.pop()
            return await self._attempt(op, deadline, first)

        def count_retry(rs: RetryCallState) -> None:
            if self._on_retry is not None:
                self._on_retry(self.dependency)

        retrying = AsyncRetrying(
            retry=retry_if_exception(_is_transient),
            # evaluated in order and short-circuited: budget is spent only for a real retry
            stop=stop_any(
                stop_after_attempt(1 + self.retry.attempts),
                _StopWhenOpen(self.breaker),
                _StopBeforeDeadline(deadline),
                _StopOutOfBudget(self.budget),
            ),
            wait=self._wait,
            sleep=self._sleep,
            before_sleep=count_retry,
            reraise=True,
        )
        return await retrying(attempt)

    async def _attempt(self, op: Callable[[], Awaitable[T]], deadline: Deadline, first: list[bool]) -> T:
        remaining = deadline.remaining()
        if remaining <= 0:
            raise DeadlineExceeded(f"deadline passed before calling {self.dependency}")
        permit = self.breaker.acquire()
        if first[0]:
            # only calls that reach the dependency earn retry budget
            first[0] = False
            self.budget.record_call()
        budget_s = min(self.attempt_timeout_s, remaining)
        timeout = asyncio.timeout(budget_s)
        try:
            async with timeout:
                result = await op()
        except TimeoutError as exc:
            if not timeout.expired():
                # the operation raised TimeoutError itself: a failure like any other
                self.breaker.on_failure(permit)
                raise DependencyTimeout(self.dependency, "timed out") from exc
            if budget_s >= self.timeout_failure_fraction * self.attempt_timeout_s:
                self.breaker.on_failure(permit)
            else:
                self.breaker.on_ignored(permit)  # cut short by the caller's deadline
            if deadline.expired:
                raise DeadlineExceeded(f"deadline passed while calling {self.dependency}") from exc
            raise DependencyTimeout(self.dependency, f"no answer within {budget_s:.3f}s") from exc
        except DependencyError as exc:
            if exc.counts_as_failure:
                self.breaker.on_failure(permit)
            else:
                self.breaker.on_ignored(permit)
            raise
        except BaseException:
            # cancellation (client gone) or a bug of ours: says nothing about the dependency
            self.breaker.on_ignored(permit)
            raise
        self.breaker.on_success(permit)
        return result


class _StopWhenOpen(stop_base):
    """Never retry into an open breaker: the retry would be refused anyway, after a sleep."""

    def __init__(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.breaker.state is BreakerState.OPEN


class _StopBeforeDeadline(stop_base):
    """stop_before_delay semantics: never start a sleep that would end past the deadline."""

    def __init__(self, deadline: Deadline) -> None:
        self.deadline = deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.deadline.remaining() <= (retry_state.upcoming_sleep or 0.0)


class _StopOutOfBudget(stop_base):
    """Spends one retry from the budget, or stops. Placed last in stop_any, which
    short-circuits, so budget is only spent for a retry that will really happen."""

    def __init__(self, budget: RetryBudget) -> None:
        self.budget = budget

    def __call__(self, retry_state: RetryCallState) -> bool:
        return not self.budget.try_spend()


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, DependencyError) and exc.transient
