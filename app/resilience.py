"""Resilience primitives: Deadline, CircuitBreaker, RetryBudget and the Guard that composes them
around one dependency call (deadline -> circuit breaker -> retry with full jitter).

No I/O here: clocks and sleeps are injected, so every boundary is testable with a fake clock.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.stop import stop_any, stop_base
from tenacity.wait import wait_random_exponential

from app.errors import CircuitOpen, DeadlineExceeded, DependencyError, DependencyTimeout

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


class BreakerState(enum.IntEnum):
    """Values are the `rag_circuit_breaker_state` gauge values."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    window: int = 20
    min_calls: int = 10
    failure_rate: float = 0.5
    open_s: float = 5.0
    half_open_permits: int = 2


class CircuitBreaker:
    """Count-based sliding-window breaker.

    CLOSED: outcomes go into a window of the last `window` calls; once at least `min_calls`
    are recorded and the failure share reaches `failure_rate`, it opens.
    OPEN: every call is refused without touching the dependency, until exactly `open_s`
    after opening, when it becomes HALF_OPEN.
    HALF_OPEN: at most `half_open_permits` trial calls at once; a failure reopens it, and
    `half_open_permits` successes close it with an empty window.
    Ignored outcomes (cancelled calls, 4xx) release their permit and count as nothing.
    """

    def __init__(
        self,
        name: str,
        config: BreakerConfig,
        clock: Clock = time.monotonic,
        on_state_change: Callable[[str, BreakerState], None] | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self._clock = clock
        self._on_state_change = on_state_change
        self._state = BreakerState.CLOSED
        self._window: deque[bool] = deque(maxlen=config.window)  # True = failure
        self._failures = 0
        self._opened_at = 0.0
        self._trials_in_flight = 0
        self._trial_successes = 0

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.config.open_s:
            self._transition(BreakerState.HALF_OPEN)
        return self._state

    def acquire(self) -> None:
        """Take permission for one call, or raise CircuitOpen (no call may be made)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return
        if state is BreakerState.HALF_OPEN and self._trials_in_flight < self.config.half_open_permits:
            self._trials_in_flight += 1
            return
        raise CircuitOpen(self.name, "circuit breaker is open")

    def on_success(self) -> None:
        if self._state is BreakerState.HALF_OPEN:
            self._trials_in_flight = max(0, self._trials_in_flight - 1)
            self._trial_successes += 1
            if self._trial_successes >= self.config.half_open_permits:
                self._transition(BreakerState.CLOSED)
        elif self._state is BreakerState.CLOSED:
            self._record(failure=False)

    def on_failure(self) -> None:
        if self._state is BreakerState.HALF_OPEN:
            self._trials_in_flight = max(0, self._trials_in_flight - 1)
            self._transition(BreakerState.OPEN)
        elif self._state is BreakerState.CLOSED:
            self._record(failure=True)
            if (
                len(self._window) >= self.config.min_calls
                and self._failures / len(self._window) >= self.config.failure_rate
            ):
                self._transition(BreakerState.OPEN)

    def on_ignored(self) -> None:
        if self._state is BreakerState.HALF_OPEN:
            self._trials_in_flight = max(0, self._trials_in_flight - 1)

    def _record(self, failure: bool) -> None:
        if len(self._window) == self._window.maxlen and self._window[0]:
            self._failures -= 1
        self._window.append(failure)
        self._failures += failure

    def _transition(self, state: BreakerState) -> None:
        self._state = state
        self._window.clear()
        self._failures = 0
        self._trials_in_flight = 0
        self._trial_successes = 0
        if state is BreakerState.OPEN:
            self._opened_at = self._clock()
        if self._on_state_change is not None:
            self._on_state_change(self.name, state)


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


class Guard:
    """deadline -> circuit breaker -> retry (full jitter, budgeted) around one dependency."""

    def __init__(
        self,
        dependency: str,
        breaker: CircuitBreaker,
        retry: RetryConfig,
        budget: RetryBudget,
        attempt_timeout_s: float,
        on_retry: Callable[[str], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.dependency = dependency
        self.breaker = breaker
        self.retry = retry
        self.budget = budget
        self.attempt_timeout_s = attempt_timeout_s
        self._on_retry = on_retry
        self._sleep = sleep

    async def call(self, op: Callable[[], Awaitable[T]], deadline: Deadline) -> T:
        """Run `op` under the breaker, retrying transient failures while time and budget last.

        Raises DependencyError (CircuitOpen, DependencyTimeout, ...) or DeadlineExceeded.
        """
        self.budget.record_call()

        def count_retry(rs: RetryCallState) -> None:
            if self._on_retry is not None:
                self._on_retry(self.dependency)

        retrying = AsyncRetrying(
            retry=retry_if_exception(_is_transient),
            # evaluated in order and short-circuited: budget is spent only for a real retry
            stop=stop_any(
                stop_after_attempt(1 + self.retry.attempts),
                _StopBeforeDeadline(deadline),
                _StopOutOfBudget(self.budget),
            ),
            wait=wait_random_exponential(multiplier=self.retry.base_s, max=self.retry.cap_s),
            sleep=self._sleep,
            before_sleep=count_retry,
            reraise=True,
        )
        return await retrying(self._attempt, op, deadline)

    async def _attempt(self, op: Callable[[], Awaitable[T]], deadline: Deadline) -> T:
        remaining = deadline.remaining()
        if remaining <= 0:
            raise DeadlineExceeded(f"deadline passed before calling {self.dependency}")
        self.breaker.acquire()
        budget_s = min(self.attempt_timeout_s, remaining)
        try:
            async with asyncio.timeout(budget_s):
                result = await op()
        except TimeoutError as exc:
            self.breaker.on_failure()
            if deadline.expired:
                raise DeadlineExceeded(f"deadline passed while calling {self.dependency}") from exc
            raise DependencyTimeout(self.dependency, f"no answer within {budget_s:.3f}s") from exc
        except DependencyError as exc:
            if exc.counts_as_failure:
                self.breaker.on_failure()
            else:
                self.breaker.on_ignored()
            raise
        except BaseException:
            # cancellation (client gone) or a bug of ours: says nothing about the dependency
            self.breaker.on_ignored()
            raise
        self.breaker.on_success()
        return result


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
