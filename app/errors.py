"""Domain errors. Clients raise these (never their library's exceptions); api/errors.py maps
them to HTTP in one table.

    RagError
    ├── InvalidRequest            bad input the schema could not catch (422)
    │   └── SnapshotInvalid       a snapshot file that is corrupt, truncated or not one (422)
    ├── NotFound                  no such thing (a snapshot name) (404)
    ├── Conflict                  cannot be done in the current state: a snapshot of another
    │                             collection or embedder, another operation running (409)
    ├── NotSupported              not available on this backend (501)
    ├── Unauthorized              missing, malformed, wrong or revoked API key (401)
    ├── Forbidden                 authenticated, but the key may not do this (403)
    ├── RateLimited               the key's request rate limit is used up (429)
    ├── PayloadTooLarge           body over the limit (413)
    ├── RequestTimeout            headers or body did not arrive in time (408, connection closed)
    ├── HeadersTooLarge           request line and headers over the limit (431)
    ├── BadHttpRequest            not a valid HTTP request (400; answered by the HTTP protocol)
    ├── ClientDisconnected        the client left before the answer (499, logged, never sent)
    ├── Overloaded                in-flight cap reached (503)
    ├── DeadlineExceeded          the request's deadline passed (504)
    └── DependencyError           a dependency failed; `dependency` names it
        ├── DependencyUnavailable connection refused/reset, 5xx, breaker open (503 if fatal)
        │   └── CircuitOpen       the breaker refused the call without trying
        ├── DependencyTimeout     one attempt ran past its timeout
        ├── DependencyBadResponse the dependency answered, but not usefully (malformed,
        │                         non-finite scores); a breaker failure, never retried
        └── DependencyRejected    the dependency refused our request (4xx); neither a breaker
            │                     success nor failure, never retried
            └── InputRejected     ...because of a value the caller sent (the caller's fault:
                                  422 with a stable message, the dependency's text only logged)
"""

from __future__ import annotations


class RagError(Exception):
    """Base of every error the gateway raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(RagError):
    pass


class SnapshotInvalid(InvalidRequest):
    pass


class NotFound(RagError):
    pass


class Conflict(RagError):
    pass


class NotSupported(RagError):
    pass


class PayloadTooLarge(RagError):
    pass


class RequestTimeout(RagError):
    """408; the connection is closed (a client that trickles its body is cut off)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.headers = {"Connection": "close"}


class HeadersTooLarge(RagError):
    pass


class BadHttpRequest(RagError):
    pass


class ClientDisconnected(RagError):
    """The client closed the connection before the answer: nobody is left to answer, the
    request is logged and counted as 499."""


class Overloaded(RagError):
    pass


class DeadlineExceeded(RagError):
    pass


class DependencyError(RagError):
    """A dependency failed. `transient` errors may be retried and count against the breaker."""

    transient = True  # may be retried
    counts_as_failure = True  # recorded as a failure by the circuit breaker
    reason = "error"

    def __init__(self, dependency: str, message: str) -> None:
        super().__init__(f"{dependency}: {message}")
        self.dependency = dependency


class DependencyUnavailable(DependencyError):
    reason = "unavailable"


class _NotAFailure:
    """A call that was refused rather than failed: never retried, and neither a success nor a
    failure for the circuit breaker."""

    transient = False
    counts_as_failure = False


class CircuitOpen(_NotAFailure, DependencyUnavailable):
    reason = "circuit_open"


class DependencyTimeout(DependencyError):
    reason = "timeout"


class DependencyBadResponse(DependencyError):
    transient = False
    reason = "bad_response"


class DependencyRejected(_NotAFailure, DependencyError):
    reason = "rejected"


class InputRejected(DependencyRejected):
    """The dependency could not take a value of the caller's request (a string it cannot encode,
    a number out of its range, a 400 from a server). The caller's fault: answered 422, never
    retried, and neither a success nor a failure for the breaker, so that one caller's garbage
    cannot open a breaker shared by everyone."""

    reason = "rejected_input"


class Unauthorized(RagError):
    """401 with `WWW-Authenticate: Bearer` (RFC 6750); `error` is its error code, if any."""

    def __init__(self, message: str, error: str | None = None) -> None:
        super().__init__(message)
        challenge = 'Bearer realm="rag-gateway"'
        if error is not None:
            challenge += f', error="{error}"'
        self.headers = {"WWW-Authenticate": challenge}


class Forbidden(RagError):
    pass


class RateLimited(RagError):
    """429; `headers` carries Retry-After and the X-RateLimit-* headers."""

    def __init__(self, message: str, headers: dict[str, str]) -> None:
        super().__init__(message)
        self.headers = headers
