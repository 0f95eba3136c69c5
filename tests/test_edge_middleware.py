"""The pure ASGI pieces of the edge, driven directly: one context per request under one state
key, headers added on the way out, and the body and slot pieces raising domain errors."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.datastructures import Headers
from starlette.types import Message, Receive, Scope, Send

from app.api.body import BodyLimitMiddleware, ConcurrencyLimitMiddleware
from app.api.context import CONTEXT_KEY, RequestContext, context_of
from app.api.middleware import RequestContextMiddleware
from app.errors import Overloaded, RequestTimeout
from app.lifespan import STATE_KEY


class Gauge:
    def __init__(self) -> None:
        self.value = 0

    def inc(self) -> None:
        self.value += 1

    def dec(self) -> None:
        self.value -= 1


def app_state(**server: Any) -> Any:
    limits = {"max_body_bytes": 100, "max_documents_body_bytes": 1000, "body_timeout_s": 5.0}
    return SimpleNamespace(
        settings=SimpleNamespace(server=SimpleNamespace(**{**limits, "max_in_flight": 1, **server})),
        metrics=SimpleNamespace(in_flight=Gauge()),
    )


def http_scope(state: dict[str, Any], path: str = "/rag", headers: list[tuple[bytes, bytes]] = []) -> Scope:  # noqa: B006
    return {"type": "http", "method": "POST", "path": path, "headers": headers, "state": state}


def with_context(state: Any, path: str = "/rag") -> Scope:
    ctx = RequestContext(state, "rid", {})
    return http_scope({STATE_KEY: state, CONTEXT_KEY: ctx}, path)


async def no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def nowhere(message: Message) -> None:
    raise AssertionError("nothing is sent here")


async def test_one_context_per_request_under_one_key_and_headers_on_the_way_out() -> None:
    lifespan_state = {STATE_KEY: app_state()}
    seen: list[dict[str, Any]] = []

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["state"])
        context_of(scope).rate_limit_headers = {"X-RateLimit-Limit": "5", "Retry-After": "1"}
        await send({"type": "http.response.start", "status": 200, "headers": [(b"retry-after", b"9")]})
        await send({"type": "http.response.body", "body": b"{}"})

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    edge = RequestContextMiddleware(handler)
    await edge(http_scope(lifespan_state, headers=[(b"x-request-id", b"abc")]), no_body, send)
    await edge(http_scope(lifespan_state), no_body, send)
    assert set(seen[0]) == set(seen[1]) == {STATE_KEY, CONTEXT_KEY}
    assert seen[0][CONTEXT_KEY] is not seen[1][CONTEXT_KEY]
    assert set(lifespan_state) == {STATE_KEY}  # the lifespan state is not written to
    first = seen[0][CONTEXT_KEY]
    assert (first.request_id, first.status) == ("abc", 200)
    headers = sent[0]["headers"]
    assert (b"x-request-id", b"abc") in headers
    assert (b"x-ratelimit-limit", b"5") in headers
    assert [v for k, v in headers if k == b"retry-after"] == [b"9"]  # the answer's own header wins


async def test_the_edge_and_the_handlers_read_the_same_headers_whatever_their_case() -> None:
    """A server may keep the client's header-name case (ASGI only asks for lower case);
    Starlette's `Headers` finds only lower-case names, and the edge reads its own lower-cased
    copy: both must see Authorization and Content-Type, and the same values."""
    seen: list[tuple[dict[str, str], Headers]] = []

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((context_of(scope).headers, Headers(scope=scope)))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    raw = [(b"Content-Type", b"application/json"), (b"AUTHORIZATION", b"Bearer a.b"), (b"x-other", b"1")]
    sent: list[Message] = []

    async def collect(message: Message) -> None:
        sent.append(message)

    await RequestContextMiddleware(handler)(
        http_scope({STATE_KEY: app_state()}, headers=raw), no_body, collect
    )
    ((edge, starlette),) = seen
    for name, value in (
        ("content-type", "application/json"),
        ("authorization", "Bearer a.b"),
        ("x-other", "1"),
    ):
        assert edge[name] == starlette.get(name) == value
    assert sent[0]["status"] == 200


async def test_the_slot_raises_overloaded_at_the_cap_and_gives_it_back() -> None:
    state = app_state(max_in_flight=1)
    started, release = asyncio.Event(), asyncio.Event()

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        started.set()
        await release.wait()

    slot = ConcurrencyLimitMiddleware(handler)
    first = asyncio.ensure_future(slot(with_context(state), no_body, nowhere))
    await started.wait()
    assert state.metrics.in_flight.value == 1
    with pytest.raises(Overloaded, match="too many requests in flight; retry shortly"):
        await slot(with_context(state), no_body, nowhere)
    release.set()
    await first
    assert slot.in_flight == state.metrics.in_flight.value == 0
    await slot(with_context(state, path="/documents"), no_body, nowhere)


async def test_a_body_that_does_not_arrive_in_time_raises_request_timeout() -> None:
    async def trickle() -> Message:
        await asyncio.sleep(10)
        return {"type": "http.request", "body": b"x", "more_body": True}

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("the handler must not run")

    body = BodyLimitMiddleware(handler)
    with pytest.raises(RequestTimeout) as timed_out:
        await body(with_context(app_state(body_timeout_s=0.05)), trickle, nowhere)
    assert timed_out.value.message == "the request body did not arrive within 0.05s"
    assert timed_out.value.headers == {"Connection": "close"}
