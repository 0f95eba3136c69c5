"""The circuit breaker (count-based sliding window, as resilience4j's) and the registry that holds
every breaker of the process, so that /metrics and /readyz iterate them instead of naming each one.
See docs/ARCHITECTURE.md, "Resilience".

No I/O here: the clock is injected, so every boundary is testable with a fake clock.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from app.errors import CircuitOpen

Clock = Callable[[], float]
StateObserver = Callable[[str, "BreakerState"], None]


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


class BreakerRegistry:
    """Every circuit breaker of the process, by dependency name. Breakers made here report their
    state changes to one observer (the metrics and the log)."""

    def __init__(self, on_state_change: StateObserver | None = None, clock: Clock = time.monotonic) -> None:
        self._on_state_change = on_state_change
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}

    def create(self, name: str, config: BreakerConfig) -> CircuitBreaker:
        if name in self._breakers:
            raise ValueError(f"a breaker named {name!r} exists already")
        breaker = CircuitBreaker(name, config, clock=self._clock, on_state_change=self._on_state_change)
        self._breakers[name] = breaker
        return breaker

    def __iter__(self) -> Iterator[CircuitBreaker]:
        return iter(list(self._breakers.values()))

    def refresh(self) -> None:
        """Ask every breaker its state: an OPEN breaker whose open time has passed moves to
        HALF_OPEN when asked, and its gauge should say so even if no request asked since."""
        for breaker in self:
            _ = breaker.state
