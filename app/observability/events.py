"""Notable events that are both a metric and a log line (so an operator sees them in either)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from app.observability.metrics import Metrics

log = logging.getLogger("rag.events")
_STATE_NAMES = {0: "closed", 1: "half_open", 2: "open"}


def breaker_observer(metrics: Metrics) -> Callable[[str, int], None]:
    """The `on_state_change` callback of a circuit breaker: sets `rag_circuit_breaker_state` and
    logs the transition (warning when it opens)."""

    def on_change(dependency: str, state: int) -> None:
        value = int(state)
        metrics.set_breaker_state(dependency, value)
        name = _STATE_NAMES.get(value, str(value))
        level = logging.WARNING if value == 2 else logging.INFO
        log.log(level, f"circuit breaker {name}", extra={"dependency": dependency, "breaker_state": name})

    return on_change
