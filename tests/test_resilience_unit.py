"""app/resilience.py and the pipeline's SingleFlight at their boundaries, without I/O.

The breaker is driven by a fake clock the way resilience4j's CircuitBreakerStateMachineTest
drives its state machine: the exact call that opens it, never before the minimum number of calls,
the instant just before / at / after the wait, HALF_OPEN permits, ignored and stale outcomes.
A Hypothesis RuleBasedStateMachine then checks it against a tiny reference model. The retry
tests inject the sleep and the jitter's random source.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from tenacity.wait import wait_exponential

from app.errors import (
    CircuitOpen,
    DeadlineExceeded,
    DependencyBadResponse,
    DependencyError,
    DependencyRejected,
    DependencyTimeout,
    DependencyUnavailable,
)
from app.pipeline import SingleFlight
from app.resilience import (
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    Deadline,
    Guard,
    Permit,
    RetryBudget,
    RetryConfig,
    wait_full_jitter,
)

CLOSED, HALF_OPEN, OPEN = BreakerState.CLOSED, BreakerState.HALF_OPEN, BreakerState.OPEN


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


def make_breaker(clock: FakeClock, **cfg: Any) -> tuple[CircuitBreaker, list[BreakerState]]:
    changes: list[BreakerState] = []
    config = BreakerConfig(**{"window": 10, "min_calls": 5, "failure_rate": 0.5, "open_s": 5.0, **cfg})
    breaker = CircuitBreaker("dep", config, clock=clock, on_state_change=lambda _n, s: changes.append(s))
    return breaker, changes


def record(breaker: CircuitBreaker, outcome: str) -> None:
    """One whole call: take a permit, report `outcome` (s = success, f = failure, i = ignored)."""
    permit = breaker.acquire()
    {"s": breaker.on_success, "f": breaker.on_failure, "i": breaker.on_ignored}[outcome](permit)


# --- Deadline ---------------------------------------------------------------------------------


def test_deadline_remaining_and_expiry_on_a_fake_clock() -> None:
    clock = FakeClock()
    d = Deadline(2.0, clock=clock)
    assert d.remaining() == 2.0 and not d.expired
    clock.advance(1.5)
    assert d.remaining() == pytest.approx(0.5) and not d.expired
    clock.advance(0.5)
    assert d.remaining() == 0.0 and d.expired
    clock.advance(10)
    assert d.remaining() == 0.0 and d.expired


# --- CircuitBreaker boundaries ----------------------------------------------------------------


def test_never_opens_before_the_minimum_number_of_calls() -> None:
    clock = FakeClock()
    b, _ = make_breaker(clock, min_calls=5)
    for _ in range(4):
        record(b, "f")
    assert b.state is CLOSED and b.failure_rate == 1.0
    record(b, "f")  # the 5th call is the first that may open it: 100% failures
    assert b.state is OPEN


def test_opens_on_exactly_the_call_that_reaches_the_failure_rate() -> None:
    clock = FakeClock()
    b, changes = make_breaker(clock, window=10, min_calls=5, failure_rate=0.5)
    for outcome in "sssff":
        record(b, outcome)
    assert b.state is CLOSED and b.failure_rate == pytest.approx(0.4)
    record(b, "f")  # 3 of 6 = 0.5: reaches the threshold on this very call
    assert b.state is OPEN
    assert changes == [OPEN]


def test_sliding_window_forgets_the_oldest_outcome() -> None:
    clock = FakeClock()
    b, _ = make_breaker(clock, window=4, min_calls=4, failure_rate=0.5)
    for outcome in "fsss":
        record(b, outcome)
    assert b.failure_rate == 0.25
    record(b, "s")  # evicts the failure
    assert b.failure_rate == 0.0
    record(b, "f")
    assert b.state is CLOSED and b.failure_rate == 0.25
    record(b, "f")  # s s f f
    assert b.state is OPEN


def test_min_calls_above_the_window_is_capped_at_the_window() -> None:
    clock = FakeClock()
    b, _ = make_breaker(clock, window=3, min_calls=50)
    for _ in range(3):
        record(b, "f")
    assert b.state is OPEN


def test_open_refuses_without_calling_and_half_opens_exactly_after_the_wait() -> None:
    clock = FakeClock()
    b, changes = make_breaker(clock, open_s=5.0, min_calls=1, window=1)
    record(b, "f")
    assert b.state is OPEN  # for exactly open_s: checked on both sides of the edge below
    for _ in range(100):  # refused every time: no permit, so no call can be made
        with pytest.raises(CircuitOpen):
            b.acquire()
    clock.advance(5.0 - 1e-6)  # just before
    assert b.state is OPEN
    with pytest.raises(CircuitOpen):
        b.acquire()
    clock.advance(1e-6)  # at: exactly open_s after opening
    assert b.state is HALF_OPEN
    assert changes == [OPEN, HALF_OPEN]


def test_half_open_allows_exactly_the_permitted_trials_at_once() -> None:
    clock = FakeClock()
    b, _ = make_breaker(clock, min_calls=1, window=1, half_open_permits=3)
    record(b, "f")
    clock.advance(5.0)
    trials = [b.acquire() for _ in range(3)]
    assert all(p.trial for p in trials)
    with pytest.raises(CircuitOpen):
        b.acquire()
    b.on_ignored(trials[0])  # a cancelled trial gives its permit back, counts as nothing
    trials[0] = b.acquire()
    with pytest.raises(CircuitOpen):
        b.acquire()
    assert b.state is HALF_OPEN


def test_half_open_closes_after_the_permitted_successes_with_an_empty_window() -> None:
    clock = FakeClock()
    b, changes = make_breaker(clock, min_calls=2, window=2, half_open_permits=2)
    record(b, "f")
    record(b, "f")
    clock.advance(5.0)
    p1, p2 = b.acquire(), b.acquire()
    b.on_success(p1)
    assert b.state is HALF_OPEN
    b.on_success(p2)
    assert b.state is CLOSED and b.failure_rate == 0.0
    record(b, "f")  # one failure in a fresh window does not reopen it (min_calls=2)
    assert b.state is CLOSED
    assert changes == [OPEN, HALF_OPEN, CLOSED]


def test_a_failed_trial_reopens_for_a_whole_new_wait() -> None:
    clock = FakeClock()
    b, changes = make_breaker(clock, min_calls=1, window=1, half_open_permits=2)
    record(b, "f")
    clock.advance(5.0)
    p1, p2 = b.acquire(), b.acquire()
    clock.advance(0.25)
    b.on_failure(p1)
    assert b.state is OPEN
    b.on_success(p2)  # the other trial's late success is stale: it must not close it
    assert b.state is OPEN
    clock.advance(5.0 - 1e-6)
    assert b.state is OPEN
    clock.advance(1e-6)
    assert b.state is HALF_OPEN
    assert changes == [OPEN, HALF_OPEN, OPEN, HALF_OPEN]


def test_ignored_outcomes_count_as_neither_success_nor_failure() -> None:
    clock = FakeClock()
    b, changes = make_breaker(clock, min_calls=3, window=3)
    for _ in range(100):
        record(b, "i")
    assert b.state is CLOSED and b.failure_rate == 0.0
    record(b, "f")
    record(b, "i")
    record(b, "f")
    assert b.state is CLOSED  # only 2 calls counted
    record(b, "f")
    assert b.state is OPEN and changes == [OPEN]


def test_outcomes_of_calls_permitted_before_a_state_change_are_stale() -> None:
    clock = FakeClock()
    b, _ = make_breaker(clock, min_calls=2, window=2, half_open_permits=1)
    slow = b.acquire()  # a long call started while CLOSED
    record(b, "f")
    record(b, "f")
    assert b.state is OPEN
    clock.advance(5.0)
    assert b.state is HALF_OPEN
    b.on_success(slow)  # finishes now: neither closes the breaker nor uses the trial permit
    assert b.state is HALF_OPEN
    trial = b.acquire()
    b.on_failure(slow)
    assert b.state is HALF_OPEN
    b.on_success(trial)
    assert b.state is CLOSED


def test_a_trial_never_reported_gives_its_permit_back_after_the_trial_timeout() -> None:
    clock = FakeClock()
    b, _ = make_breaker(clock, min_calls=1, window=1, half_open_permits=1, trial_timeout_s=2.0)
    record(b, "f")
    clock.advance(5.0)
    lost = b.acquire()
    clock.advance(2.0 - 1e-6)
    with pytest.raises(CircuitOpen):
        b.acquire()
    clock.advance(1e-6)
    fresh = b.acquire()
    b.on_failure(lost)  # reclaimed: its late report counts for nothing
    assert b.state is HALF_OPEN
    b.on_success(fresh)
    assert b.state is CLOSED


@pytest.mark.parametrize(
    "cfg",
    [
        {"window": 0},
        {"min_calls": 0},
        {"failure_rate": 0.0},
        {"failure_rate": 1.5},
        {"open_s": 0.0},
        {"half_open_permits": 0},
        {"trial_timeout_s": -1.0},
    ],
)
def test_breaker_config_is_validated(cfg: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="breaker"):
        BreakerConfig(**cfg)


# --- CircuitBreaker against a reference model (Hypothesis) -------------------------------------


@dataclass
class ModelTicket:
    epoch: int
    trial: bool
    taken_at: float


@dataclass
class BreakerModel:
    """The specification, written plainly: recompute everything from a list."""

    window: int
    min_calls: int
    rate: float
    open_s: float
    permits: int
    trial_timeout: float
    state: str = "closed"
    epoch: int = 0
    outcomes: list[bool] = field(default_factory=list)  # True = failure, newest last
    opened_at: float = 0.0
    trials: list[ModelTicket] = field(default_factory=list)
    successes: int = 0

    def move(self, state: str, now: float) -> None:
        self.state, self.epoch = state, self.epoch + 1
        self.outcomes, self.trials, self.successes = [], [], 0
        if state == "open":
            self.opened_at = now

    def tick(self, now: float) -> None:
        if self.state == "open" and now - self.opened_at >= self.open_s:
            self.move("half_open", now)

    def acquire(self, now: float) -> ModelTicket | None:
        self.tick(now)
        if self.state == "closed":
            return ModelTicket(self.epoch, False, now)
        if self.state == "half_open":
            self.trials = [t for t in self.trials if now - t.taken_at < self.trial_timeout]
            if len(self.trials) < self.permits:
                ticket = ModelTicket(self.epoch, True, now)
                self.trials.append(ticket)
                return ticket
        return None

    def live(self, t: ModelTicket) -> bool:
        return t.epoch == self.epoch and (not t.trial or any(x is t for x in self.trials))

    def report(self, t: ModelTicket, outcome: str, now: float) -> None:
        if not self.live(t):
            return
        if t.trial:
            self.trials = [x for x in self.trials if x is not t]
        if outcome == "ignored":
            return
        if self.state == "half_open":
            if outcome == "failure":
                self.move("open", now)
            else:
                self.successes += 1
                if self.successes >= self.permits:
                    self.move("closed", now)
            return
        self.outcomes = ([*self.outcomes, outcome == "failure"])[-self.window :]
        n = len(self.outcomes)
        if (
            outcome == "failure"
            and n >= min(self.min_calls, self.window)
            and sum(self.outcomes) / n >= self.rate
        ):
            self.move("open", now)


STATE_NAMES = {"closed": CLOSED, "half_open": HALF_OPEN, "open": OPEN}


class BreakerMachine(RuleBasedStateMachine):
    @initialize(
        window=st.integers(1, 6),
        min_calls=st.integers(1, 8),
        rate=st.sampled_from([0.25, 0.5, 0.75, 1.0]),
        permits=st.integers(1, 3),
    )
    def setup(self, window: int, min_calls: int, rate: float, permits: int) -> None:
        self.clock = FakeClock(0.0)
        cfg = BreakerConfig(
            window=window,
            min_calls=min_calls,
            failure_rate=rate,
            open_s=4.0,
            half_open_permits=permits,
            trial_timeout_s=8.0,
        )
        self.breaker = CircuitBreaker("dep", cfg, clock=self.clock)
        self.model = BreakerModel(window, min_calls, rate, 4.0, permits, 8.0)
        self.outstanding: list[tuple[Permit, ModelTicket]] = []

    @rule()
    def acquire(self) -> None:
        expected = self.model.acquire(self.clock())
        try:
            permit = self.breaker.acquire()
        except CircuitOpen:
            assert expected is None, "breaker refused a call the model allows"
            return
        assert expected is not None, "breaker allowed a call the model refuses"
        assert permit.trial == expected.trial
        self.outstanding.append((permit, expected))

    @precondition(lambda self: bool(self.outstanding))
    @rule(data=st.data(), outcome=st.sampled_from(["success", "failure", "ignored"]))
    def report(self, data: st.DataObject, outcome: str) -> None:
        i = data.draw(st.integers(0, len(self.outstanding) - 1))
        permit, ticket = self.outstanding.pop(i)
        getattr(self.breaker, f"on_{outcome}")(permit)
        self.model.report(ticket, outcome, self.clock())

    @rule(dt=st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.5, 4.0, 8.0]))
    def advance(self, dt: float) -> None:
        self.clock.advance(dt)

    @invariant()
    def same_state(self) -> None:
        self.model.tick(self.clock())
        assert self.breaker.state is STATE_NAMES[self.model.state]


BreakerMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestBreakerAgainstModel = BreakerMachine.TestCase


# --- Retry: full jitter, what is retried, deadline, breaker, budget ----------------------------


class Sleeps:
    """An injected sleep that records each delay and advances a fake clock by it."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.delays: list[float] = []
        self.clock = clock

    async def __call__(self, s: float) -> None:
        self.delays.append(s)
        if self.clock is not None:
            self.clock.advance(s)
        await asyncio.sleep(0)


def open_breaker_never(clock: Any = time.monotonic) -> CircuitBreaker:
    return CircuitBreaker("dep", BreakerConfig(window=1000, min_calls=1000, failure_rate=1.0), clock=clock)


def make_guard(
    *,
    attempts: int = 3,
    base: float = 0.1,
    cap: float = 0.5,
    breaker: CircuitBreaker | None = None,
    budget: RetryBudget | None = None,
    sleep: Sleeps | None = None,
    attempt_timeout_s: float = 1.0,
    seed: int = 1,
    retries_seen: list[str] | None = None,
) -> Guard:
    return Guard(
        "dep",
        breaker or open_breaker_never(),
        RetryConfig(attempts=attempts, base_s=base, cap_s=cap),
        budget or RetryBudget(ratio=1.0, floor=1000),
        attempt_timeout_s=attempt_timeout_s,
        on_retry=retries_seen.append if retries_seen is not None else None,
        sleep=sleep or Sleeps(),
        rng=random.Random(seed),
    )


class Dependency:
    """A fake dependency: raises the scripted errors in order, then returns `value`."""

    def __init__(
        self, *errors: BaseException, value: Any = "ok", always: BaseException | None = None
    ) -> None:
        self.errors = list(errors)
        self.always = always
        self.value = value
        self.calls = 0
        self.started_at: list[float] = []

    def op(self, clock: Callable[[], float] = time.monotonic) -> Callable[[], Awaitable[Any]]:
        async def run() -> Any:
            self.calls += 1
            self.started_at.append(clock())
            if self.always is not None:
                raise self.always
            if self.errors:
                raise self.errors.pop(0)
            return self.value

        return run


def unavailable() -> DependencyUnavailable:
    return DependencyUnavailable("dep", "answered 503")


@pytest.mark.parametrize("seed", range(5))
async def test_retry_sleeps_are_drawn_within_the_full_jitter_bounds(seed: int) -> None:
    sleeps = Sleeps()
    retries: list[str] = []
    guard = make_guard(attempts=5, base=0.1, cap=0.5, sleep=sleeps, seed=seed, retries_seen=retries)
    dep = Dependency(*[unavailable() for _ in range(5)])
    assert await guard.call(dep.op(), Deadline(60)) == "ok"
    assert dep.calls == 6  # 1 + R attempts
    assert retries == ["dep"] * 5
    assert len(sleeps.delays) == 5
    for n, s in enumerate(sleeps.delays):
        assert 0.0 <= s <= min(0.5, 0.1 * 2**n), (n, s)


def test_full_jitter_is_uniform_over_the_whole_interval() -> None:
    wait = wait_full_jitter(0.1, 0.5, random.Random(42))

    @dataclass
    class State:
        attempt_number: int

    for n in range(6):
        bound = min(0.5, 0.1 * 2**n)
        draws = [wait(State(n + 1)) for _ in range(2000)]  # type: ignore[arg-type]
        assert all(0.0 <= d <= bound for d in draws)
        assert min(draws) < 0.05 * bound and max(draws) > 0.95 * bound
        assert sum(draws) / len(draws) == pytest.approx(bound / 2, rel=0.06)
    # no overflow for absurd attempt numbers: the interval is capped
    assert wait_exponential.__call__(wait, State(10_001)) == 0.5  # type: ignore[arg-type]


async def test_attempts_are_capped_at_one_plus_the_configured_retries() -> None:
    dep = Dependency(always=unavailable())
    guard = make_guard(attempts=2)
    with pytest.raises(DependencyUnavailable):
        await guard.call(dep.op(), Deadline(60))
    assert dep.calls == 3


@pytest.mark.parametrize(
    "error",
    [
        DependencyUnavailable("dep", "connection refused"),
        DependencyUnavailable("dep", "answered 502"),
        DependencyTimeout("dep", "timed out"),
    ],
)
async def test_transient_errors_are_retried(error: DependencyError) -> None:
    dep = Dependency(error)
    assert await make_guard().call(dep.op(), Deadline(60)) == "ok"
    assert dep.calls == 2


@pytest.mark.parametrize(
    ("error", "counts"),
    [
        (DependencyRejected("dep", "refused the request with 400"), False),
        (DependencyRejected("dep", "refused the request with 429"), False),
        (DependencyBadResponse("dep", "answered 500"), True),
        (DependencyBadResponse("dep", "non-finite score"), True),
    ],
)
async def test_4xx_and_bad_answers_are_never_retried(error: DependencyError, counts: bool) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("dep", BreakerConfig(window=1, min_calls=1), clock=clock)
    dep = Dependency(always=error)
    sleeps = Sleeps()
    with pytest.raises(type(error)):
        await make_guard(breaker=breaker, sleep=sleeps).call(dep.op(), Deadline(60))
    assert dep.calls == 1 and sleeps.delays == []
    # a 4xx is our fault: the breaker counts it as nothing; a 500 or a NaN is a failure
    assert breaker.state is (OPEN if counts else CLOSED)


async def test_cancelled_error_is_never_retried_nor_counted() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("dep", BreakerConfig(window=1, min_calls=1), clock=clock)
    dep = Dependency(always=asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        await make_guard(breaker=breaker).call(dep.op(), Deadline(60))
    assert dep.calls == 1 and breaker.state is CLOSED


async def test_cancelling_the_caller_during_a_backoff_sleep_stops_the_retries() -> None:
    dep = Dependency(always=unavailable())
    guard = Guard(
        "dep",
        open_breaker_never(),
        RetryConfig(attempts=5, base_s=10.0, cap_s=10.0),
        RetryBudget(1.0, 100),
        attempt_timeout_s=1.0,
        rng=random.Random(3),
    )
    task = asyncio.ensure_future(guard.call(dep.op(), Deadline(600)))
    while dep.calls == 0:
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert dep.calls == 1


async def test_no_retry_into_an_open_breaker() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("dep", BreakerConfig(window=2, min_calls=2), clock=clock)
    record(breaker, "f")
    dep = Dependency(always=unavailable())
    sleeps = Sleeps()
    with pytest.raises(DependencyUnavailable) as info:
        await make_guard(breaker=breaker, sleep=sleeps, attempts=5).call(dep.op(), Deadline(60))
    # this failure opened the breaker: no sleep, no second attempt, the real cause is raised
    assert not isinstance(info.value, CircuitOpen)
    assert dep.calls == 1 and sleeps.delays == [] and breaker.state is OPEN
    with pytest.raises(CircuitOpen):
        await make_guard(breaker=breaker, sleep=sleeps).call(dep.op(), Deadline(60))
    assert dep.calls == 1


async def test_no_attempt_and_no_sleep_past_the_deadline() -> None:
    clock = FakeClock()
    sleeps = Sleeps(clock)
    # each failed attempt takes 0.3 s of fake time; backoff draws up to 0.5 s
    dep = Dependency(always=unavailable())

    async def op() -> Any:
        try:
            return await dep.op(clock)()  # records the start time, then fails...
        finally:
            clock.advance(0.3)  # ...after 0.3 s

    for seed in range(20):
        dep.calls, dep.started_at, sleeps.delays = 0, [], []
        deadline = Deadline(1.0, clock=clock)
        guard = make_guard(attempts=10, base=0.2, cap=0.5, sleep=sleeps, seed=seed)
        with pytest.raises(DependencyError):
            await guard.call(op, deadline)
        assert dep.calls >= 1
        assert all(t <= deadline.expires_at for t in dep.started_at), (seed, dep.started_at)
        # stop_before_delay: the last sleep, if any, ended before the deadline
        elapsed = 0.3 * dep.calls + sum(sleeps.delays)
        assert elapsed <= 1.0 + 0.3 + 1e-9


async def test_an_attempt_is_cut_at_the_deadline_in_real_time() -> None:
    async def hang() -> None:
        await asyncio.sleep(60)

    guard = make_guard(attempt_timeout_s=5.0)
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        await guard.call(hang, Deadline(0.2))
    assert 0.18 <= time.monotonic() - t0 < 0.6
    with pytest.raises(DeadlineExceeded):
        await guard.call(hang, Deadline(0.0))


async def test_a_timeout_counts_against_the_breaker_only_when_the_attempt_had_its_time() -> None:
    async def hang() -> None:
        await asyncio.sleep(60)

    breaker = CircuitBreaker("dep", BreakerConfig(window=1, min_calls=1, failure_rate=1.0))
    guard = make_guard(breaker=breaker, attempt_timeout_s=0.2, attempts=0)
    with pytest.raises(DeadlineExceeded):  # a caller's 20 ms deadline: not the dependency's fault
        await guard.call(hang, Deadline(0.02))
    assert breaker.state is CLOSED
    with pytest.raises(DependencyTimeout):  # a full 200 ms attempt unanswered: its fault
        await guard.call(hang, Deadline(5.0))
    assert breaker.state is OPEN


async def test_a_half_open_trial_that_hangs_times_out_and_reopens() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        "dep", BreakerConfig(window=1, min_calls=1, open_s=1.0, half_open_permits=1), clock=clock
    )
    record(breaker, "f")
    clock.advance(1.0)

    async def hang() -> None:
        await asyncio.sleep(60)

    guard = make_guard(breaker=breaker, attempt_timeout_s=0.05, attempts=3)
    t0 = time.monotonic()
    with pytest.raises(DependencyTimeout):
        await guard.call(hang, Deadline(5.0))
    assert time.monotonic() - t0 < 0.5
    assert breaker.state is OPEN


async def test_budget_holds_with_a_dependency_that_always_fails() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.2, floor=3, window_s=10.0, clock=clock)
    retries: list[str] = []
    guard = make_guard(attempts=3, budget=budget, breaker=open_breaker_never(clock), retries_seen=retries)
    dep = Dependency(always=unavailable())
    calls = 50
    for _ in range(calls):
        with pytest.raises(DependencyUnavailable):
            await guard.call(dep.op(), Deadline(60, clock=clock))
        clock.advance(0.01)
    # without the budget: 50 * (1 + 3) = 200 attempts; with it: 50 + 3 + 20% of 50
    assert len(retries) == dep.calls - calls
    assert calls + 3 <= dep.calls <= calls + 3 + math.ceil(0.2 * calls)


def test_budget_window_slides() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.5, floor=1, window_s=10.0, clock=clock)
    for _ in range(4):
        budget.record_call()
    assert [budget.try_spend() for _ in range(4)] == [True, True, True, False]  # 1 + 0.5 * 4
    clock.advance(10.0)  # everything aged out: only the floor is left
    assert budget.try_spend() is True
    assert budget.try_spend() is False


async def test_calls_refused_by_the_breaker_earn_no_retry_budget() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("dep", BreakerConfig(window=1, min_calls=1), clock=clock)
    record(breaker, "f")
    budget = RetryBudget(ratio=1.0, floor=0, clock=clock)
    guard = make_guard(breaker=breaker, budget=budget)
    for _ in range(10):
        with pytest.raises(CircuitOpen):
            await guard.call(Dependency().op(), Deadline(60))
    assert budget.try_spend() is False


# --- SingleFlight -------------------------------------------------------------------------------


class Gate:
    def __init__(self) -> None:
        self.calls = 0
        self.cancelled = 0
        self.release = asyncio.Event()

    async def fn(self) -> list[float]:
        self.calls += 1
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return [1.0, 2.0]


async def test_single_flight_shares_one_call() -> None:
    sf, gate = SingleFlight(), Gate()
    tasks = [asyncio.ensure_future(sf.do("k", gate.fn)) for _ in range(8)]
    await asyncio.sleep(0.01)
    gate.release.set()
    assert await asyncio.gather(*tasks) == [[1.0, 2.0]] * 8
    assert gate.calls == 1
    # the finished call is forgotten: the next caller starts a fresh one
    assert await sf.do("k", gate.fn) == [1.0, 2.0]
    assert gate.calls == 2


async def test_single_flight_leader_leaving_does_not_cancel_the_call_for_the_others() -> None:
    sf, gate = SingleFlight(), Gate()
    leader = asyncio.ensure_future(sf.do("k", gate.fn))
    await asyncio.sleep(0.01)
    follower = asyncio.ensure_future(sf.do("k", gate.fn))
    await asyncio.sleep(0.01)
    leader.cancel()
    await asyncio.sleep(0.01)
    assert gate.cancelled == 0
    gate.release.set()
    assert await follower == [1.0, 2.0]
    assert gate.calls == 1


async def test_single_flight_last_waiter_leaving_cancels_the_call() -> None:
    sf, gate = SingleFlight(), Gate()
    waiters = [asyncio.ensure_future(sf.do("k", gate.fn)) for _ in range(3)]
    await asyncio.sleep(0.01)
    for w in waiters:
        w.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    await asyncio.sleep(0.01)
    assert gate.cancelled == 1
    # the cancelled call is forgotten: a new caller starts a fresh call
    gate.release.set()
    assert await sf.do("k", gate.fn) == [1.0, 2.0]
    assert gate.calls == 2


async def test_single_flight_follower_is_bounded_by_its_own_timeout() -> None:
    sf, gate = SingleFlight(), Gate()
    leader = asyncio.ensure_future(sf.do("k", gate.fn, timeout=10))
    await asyncio.sleep(0.01)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        await sf.do("k", gate.fn, timeout=0.05)
    assert time.monotonic() - t0 < 0.5
    assert gate.cancelled == 0
    gate.release.set()
    assert await leader == [1.0, 2.0]


async def test_single_flight_shares_failures_too() -> None:
    sf = SingleFlight()
    calls = 0

    async def fail() -> list[float]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.02)
        raise unavailable()

    results = await asyncio.gather(*(sf.do("k", fail) for _ in range(4)), return_exceptions=True)
    assert calls == 1 and all(isinstance(r, DependencyUnavailable) for r in results)


async def test_single_flight_the_caller_that_starts_the_call_is_bounded_by_the_call_itself() -> None:
    # its deadline is enforced inside fn (the Guard): a second timer would race the Guard and
    # could cancel an attempt whose timeout the breaker should have counted
    sf, gate = SingleFlight(), Gate()
    leader = asyncio.ensure_future(sf.do("k", gate.fn, timeout=0.05))
    await asyncio.sleep(0.15)
    assert not leader.done() and gate.cancelled == 0
    gate.release.set()
    assert await leader == [1.0, 2.0]
