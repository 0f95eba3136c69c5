"""httpx exception and status translation shared by the HTTP-speaking clients.

Transient (retried, breaker failure): connection errors, timeouts, 502/503/504.
Breaker failure, not retried: other 5xx, and answers httpx cannot use (bad encoding, redirect
loops). Neither (our request was refused): 4xx.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from app.errors import (
    DependencyBadResponse,
    DependencyRejected,
    DependencyTimeout,
    DependencyUnavailable,
)

TRANSIENT_STATUS = frozenset({502, 503, 504})


@contextmanager
def translate_http_errors(dependency: str) -> Iterator[None]:
    try:
        yield
    except httpx.TimeoutException as exc:
        raise DependencyTimeout(dependency, f"timed out: {type(exc).__name__}") from exc
    except httpx.TransportError as exc:
        raise DependencyUnavailable(dependency, f"transport error: {type(exc).__name__}") from exc
    except httpx.HTTPError as exc:
        # it answered, but not in a way we can use (undecodable body, redirect loop, ...)
        raise DependencyBadResponse(dependency, f"unusable answer: {type(exc).__name__}") from exc


def raise_for_http_error(dependency: str, resp: httpx.Response) -> None:
    code = resp.status_code
    if code < 400:
        return
    if code in TRANSIENT_STATUS:
        raise DependencyUnavailable(dependency, f"answered {code}")
    if code >= 500:
        raise DependencyBadResponse(dependency, f"answered {code}")
    raise DependencyRejected(dependency, f"refused the request with {code}")


class HttpBackend:
    """What the HTTP-speaking clients share: their httpx client, `GET /health` as the
    readiness check (any 4xx or 5xx is unavailable) and closing the client."""

    dependency: str

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def ping(self) -> None:
        with translate_http_errors(self.dependency):
            resp = await self._client.get("/health")
        if resp.status_code >= 400:
            raise DependencyUnavailable(self.dependency, f"health answered {resp.status_code}")

    async def aclose(self) -> None:
        await self._client.aclose()
