"""Resilience primitives: Deadline, CircuitBreaker, RetryBudget and the Guard that composes them
around one dependency call (deadline -> circuit breaker -> retry with full jitter).

No I/O here: clocks, sleeps and the jitter's random source are injected, so every boundary is
testable with a fake clock (tests/test_resilience_unit.py).
"""

from __future__ import annotations

import asyncio
import enum
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.stop import stop_any, stop_base
from tenacity.wait import wait_base

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
    # a HALF_OPEN trial whose outcome was never reported (a caller bug) gives its permit back
    # after this long, so the breaker can never get stuck refusing every call
    trial_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.window < 1 or self.min_calls < 1 or self.half_open_permits < 1:
            raise ValueError("breaker window, min_calls and half_open_permits must be >= 1")
        if not 0 < self.failure_rate <= 1:
            raise ValueError("breaker failure_rate must be in (0, 1]")
        if self.open_s <= 0 or self.trial_timeout_s <= 0:
            raise ValueError("breaker open_s and trial_timeout_s must be > 0")

    @property
    def effective_min_calls(self) -> int:
        # as resilience4j: a minimum above the window size would never be reached
        return min(self.min_calls, self.window)


@dataclass(eq=False, slots=True)
class Permit:
    """Permission for one call, handed back with its outcome. A permit from an earlier state
    (the breaker moved on while the call ran) is stale: its outcome is not counted."""

    generation: int
    trial: bool
    taken_at: float


class CircuitBreaker:
    """Count-based sliding-window breaker.

    CLOSED: outcomes go into a window of the last `window` calls; once at least `min_calls`
    are recorded and the failure share reaches `failure_rate`, it opens.
    OPEN: every call is refused without touching the dependency, until exactly `open_s`
    after opening, when it becomes HALF_OPEN.
    HALF_OPEN: at most `half_open_permits` trial calls at once; a failure reopens it, and
    `half_open_permits` successes close it with an empty window.
    Ignored outcomes (cancelled calls, 4xx) release their permit and count as nothing.
    Outcomes of calls permitted before the last state change are stale and count as nothing.
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
        self._generation = 0
        self._window: deque[bool] = deque(maxlen=config.window)  # True = failure
        self._failures = 0
        self._opened_at = 0.0
        self._trials: set[Permit] = set()
        self._trial_successes = 0

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.config.open_s:
            self._transition(BreakerState.HALF_OPEN)
        return self._state

    @property
    def failure_rate(self) -> float:
        """Failure share in the current window (0 when empty)."""
        return self._failures / len(self._window) if self._window else 0.0

    def open_remaining(self) -> float:
        """Seconds until an OPEN breaker half-opens (0 unless OPEN)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.config.open_s - self._clock())

    def acquire(self) -> Permit:
        """Take permission for one call, or raise CircuitOpen (no call may be made)."""
        state = self.state
        now = self._clock()
        if state is BreakerState.CLOSED:
            return Permit(self._generation, trial=False, taken_at=now)
        if state is BreakerState.HALF_OPEN:
            edge = now - self.config.trial_timeout_s
            for p in [p for p in self._trials if p.taken_at <= edge]:
                self._trials.discard(p)
            if len(self._trials) < self.config.half_open_permits:
                permit = Permit(self._generation, trial=True, taken_at=now)
                self._trials.add(permit)
                return permit
        raise CircuitOpen(self.name, f"circuit breaker is {state.name.lower()}")

    def _current(self, permit: Permit) -> bool:
        if permit.generation != self._generation:
            return False
        if permit.trial:
            # reclaimed by the trial timeout: its outcome no longer counts
            return permit in self._trials
        return True

    def on_success(self, permit: Permit) -> None:
        if not self._current(permit):
            return
        if self._state is BreakerState.HALF_OPEN:
            self._trials.discard(permit)
            self._trial_successes += 1
            if self._trial_successes >= self.config.half_open_permits:
                self._transition(BreakerState.CLOSED)
        elif self._state is BreakerState.CLOSED:
            self._record(failure=False)

    def on_failure(self, permit: Permit) -> None:
        if not self._current(permit):
            return
        if self._state is BreakerState.HALF_OPEN:
            self._transition(BreakerState.OPEN)
        elif self._state is BreakerState.CLOSED:
            self._record(failure=True)
            if (
                len(self._window) >= self.config.effective_min_calls
                and self._failures / len(self._window) >= self.config.failure_rate
            ):
                self._transition(BreakerState.OPEN)

    def on_ignored(self, permit: Permit) -> None:
        if self._current(permit) and permit.trial:
            self._trials.discard(permit)

    def _record(self, failure: bool) -> None:
        if len(self._window) == self._window.maxlen and self._window[0]:
            self._failures -= 1
        self._window.append(failure)
        self._failures += failure

    def _transition(self, state: BreakerState) -> None:
        self._state = state
        self._generation += 1
        self._window.clear()
        self._failures = 0
        self._trials.clear()
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


class wait_full_jitter(wait_base):  # named like tenacity's own waits
    """AWS "full jitter": the n-th retry (n = 0, 1, ...) sleeps uniform(0, min(cap, base * 2**n))."""

    def __init__(self, base_s: float, cap_s: float, rng: random.Random | None = None) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.rng = rng or random.Random()

    def bound(self, n: int) -> float:
        return min(self.cap_s, self.base_s * 2.0 ** min(n, 64))

    def __call__(self, retry_state: RetryCallState) -> float:
        # attempt_number is 1 after the first failure: that is retry n = 0
        return self.rng.uniform(0.0, self.bound(retry_state.attempt_number - 1))


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
        return await retrying(self._attempt, op, deadline, first)

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
