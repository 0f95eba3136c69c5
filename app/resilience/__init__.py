"""Resilience: the circuit breaker and its registry (breaker.py), the deadline, retry budget and
the Guard that composes them around one dependency call (guard.py). See docs/ARCHITECTURE.md,
"Resilience"."""

from app.resilience.breaker import BreakerConfig, BreakerRegistry, BreakerState, CircuitBreaker, Permit
from app.resilience.guard import Deadline, Guard, RetryBudget, RetryConfig, wait_full_jitter

__all__ = [
    "BreakerConfig",
    "BreakerRegistry",
    "BreakerState",
    "CircuitBreaker",
    "Deadline",
    "Guard",
    "Permit",
    "RetryBudget",
    "RetryConfig",
    "wait_full_jitter",
]
