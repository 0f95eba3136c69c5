"""The exceptions of both Qdrant libraries as domain errors (see docs/ARCHITECTURE.md, "Errors").

One table per library (qdrant-edge's here; qdrant-client's in client_errors.py, apart so that
the embedded backend never imports qdrant-client), read like httpx's `map_httpcore_exceptions`:
rows in order, most specific first; the first row whose type matches (and whose condition
holds) gives the domain error. The last row of each table takes any Exception, so no library
exception crosses the store's boundary. What the rows mean for the breaker (app/resilience.py):

- the request was refused for one of its values (Qdrant's 400/422, "Wrong input", a value the
  binding cannot convert): `InputRejected`, the caller's fault, neither success nor failure;
- any other refusal (another 4xx): `DependencyRejected`, neither success nor failure;
- timeouts: `DependencyTimeout`; no connection, overloaded, collection missing or store closed:
  `DependencyUnavailable` (both transient, breaker failures);
- anything else (5xx, an answer that cannot be parsed, an engine error): `DependencyBadResponse`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from app.clients.vectorstore.shared import DEPENDENCY
from app.errors import (
    DependencyBadResponse,
    DependencyError,
    DependencyTimeout,
    DependencyUnavailable,
    InputRejected,
)

Check = Callable[[BaseException], bool]


def _always(exc: BaseException) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class Row:
    """An exception of type `kind` for which `when` holds becomes `error`, its message `what`
    followed by the library's own text (logged, never shown to a client)."""

    kind: type[BaseException] | tuple[type[BaseException], ...]
    error: type[DependencyError]
    what: str
    when: Check = _always


def status(*codes: int) -> Check:
    return lambda exc: getattr(exc, "status_code", None) in codes


def client_error(exc: BaseException) -> bool:
    return 400 <= int(getattr(exc, "status_code", 0) or 0) < 500


def source(*kinds: type[BaseException]) -> Check:
    return lambda exc: isinstance(getattr(exc, "source", None), kinds)


def says(*starts: str) -> Check:
    return lambda exc: str(exc).startswith(starts)


# Qdrant's own texts for a request it refused because of a value in it (in qdrant-edge's
# exceptions, and in qdrant-client's local mode, which raises what a server would answer with 400)
REFUSED_VALUE = (
    "Wrong input",
    "Bad input",
    "Bad request",
    "Vector dimension error",
    "Validation failed",
    "Payload type does not match",
    "Not existing vector name",
)

EDGE_ERRORS: tuple[Row, ...] = (
    # the binding could not convert a value (a lone surrogate, an integer out of range, a value
    # of another type): the request's fault, not the engine's
    Row(
        (TypeError, ValueError, UnicodeError, OverflowError), InputRejected, "embedded engine refused a value"
    ),
    # the store was closed (its thread pool shut down, the shard closed) under a late call
    Row(RuntimeError, DependencyUnavailable, "store closed", says("cannot schedule new futures")),
    Row(Exception, DependencyUnavailable, "store closed", says("Service runtime error: Shard is not init")),
    Row(TimeoutError, DependencyTimeout, "embedded engine timed out"),
    Row(OSError, DependencyUnavailable, "embedded engine storage failed"),
    # the engine raises plain Exceptions whose text starts with Qdrant's error kind
    Row(Exception, DependencyTimeout, "embedded engine timed out", says("Timeout error")),
    Row(Exception, InputRejected, "embedded engine refused a value", says(*REFUSED_VALUE)),
    Row(Exception, DependencyBadResponse, "embedded engine error"),
)


def _detail(exc: BaseException) -> str:
    status, reason = getattr(exc, "status_code", None), getattr(exc, "reason_phrase", None)
    if status is not None and reason is not None:  # a server's answer
        return f"{status} {reason}"
    source = getattr(exc, "source", None)
    if isinstance(source, BaseException):  # qdrant-client's wrapper of what went wrong
        return repr(source)
    return f"{type(exc).__name__}: {exc}"


def translate(table: Sequence[Row], exc: BaseException) -> DependencyError:
    """The domain error of the first row of `table` that matches `exc`."""
    for row in table:
        if isinstance(exc, row.kind) and row.when(exc):
            return row.error(DEPENDENCY, f"{row.what}: {_detail(exc)}")
    return DependencyBadResponse(DEPENDENCY, _detail(exc))


@contextmanager
def translated(table: Sequence[Row]) -> Iterator[None]:
    """Raise what `table` makes of any exception in the block; domain errors pass unchanged."""
    try:
        yield
    except DependencyError:
        raise
    except Exception as exc:
        raise translate(table, exc) from exc
