"""The edge's pieces on their own: reading the body raises domain errors (never returns one), and
`answer_error` is how the middleware turns them into answers (through the one error table)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import orjson
import pytest
from starlette.types import Message

from app.api.body import read_body
from app.api.context import RequestContext
from app.api.errors import CLIENT_CLOSED, answer_error
from app.errors import (
    BadHttpRequest,
    ClientDisconnected,
    HeadersTooLarge,
    Overloaded,
    PayloadTooLarge,
    RagError,
    RequestTimeout,
)


def receiving(*messages: Message) -> Any:
    queue = list(messages)

    async def receive() -> Message:
        return queue.pop(0)

    return receive


def chunk(body: bytes, more: bool = True) -> Message:
    return {"type": "http.request", "body": body, "more_body": more}


async def test_read_body_returns_the_whole_body() -> None:
    assert await read_body({}, receiving(chunk(b"ab"), chunk(b"c", more=False)), 3) == b"abc"


async def test_read_body_raises_payload_too_large_on_the_declared_or_the_sent_length() -> None:
    with pytest.raises(PayloadTooLarge) as declared:
        await read_body({"content-length": "11"}, receiving(), 10)
    assert declared.value.message == "request body is 11 bytes; the limit is 10"
    with pytest.raises(PayloadTooLarge) as chunked:
        await read_body({}, receiving(chunk(b"x" * 6), chunk(b"x" * 6)), 10)
    assert chunked.value.message == "request body exceeds the limit of 10 bytes"


async def test_read_body_raises_client_disconnected() -> None:
    with pytest.raises(ClientDisconnected):
        await read_body({}, receiving(chunk(b"x"), {"type": "http.disconnect"}), 10)


def context() -> RequestContext:
    app = SimpleNamespace(settings=SimpleNamespace(server=SimpleNamespace(retry_after_s=7)))
    return RequestContext(cast(Any, app), "rid-1", {})


async def answered(exc: Exception, ctx: RequestContext) -> list[Message]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/rag", "headers": []}
    await answer_error(exc, ctx, scope, receiving(), send)
    return sent


def headers(start: Message) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in start["headers"]}


async def test_a_client_that_left_gets_no_answer_and_is_counted_as_499() -> None:
    ctx = context()
    assert await answered(ClientDisconnected("gone"), ctx) == []
    assert ctx.status == CLIENT_CLOSED == 499


@pytest.mark.parametrize(
    ("exc", "status", "type_", "extra"),
    [
        (PayloadTooLarge("too big"), 413, "payload_too_large", {}),
        (RequestTimeout("too slow"), 408, "request_timeout", {"connection": "close"}),
        (Overloaded("busy"), 503, "overloaded", {"retry-after": "7"}),
        (ValueError("a bug"), 500, "internal_error", {}),
    ],
)
async def test_errors_raised_in_the_middleware_are_answered_from_the_table(
    exc: Exception, status: int, type_: str, extra: dict[str, str]
) -> None:
    start, body = await answered(exc, context())
    assert start["status"] == status
    assert extra.items() <= headers(start).items()
    error = orjson.loads(body["body"])["error"]
    assert error["type"] == type_ and error["request_id"] == "rid-1"
    if status == 500:
        assert error["message"] == "internal error"  # a bug's text is never sent
    else:
        assert error["message"] == str(exc)


async def test_nothing_is_answered_twice() -> None:
    ctx = context()
    ctx.status = 200  # the answer started already
    assert await answered(PayloadTooLarge("too big"), ctx) == []
    assert ctx.status == 200


@pytest.mark.parametrize(
    ("exc", "line", "type_"),
    [
        (RequestTimeout("slow headers"), b"HTTP/1.1 408 ", "request_timeout"),
        (HeadersTooLarge("big headers"), b"HTTP/1.1 431 ", "headers_too_large"),
        (BadHttpRequest("Invalid HTTP request received."), b"HTTP/1.1 400 ", "bad_request"),
    ],
)
def test_the_http_protocol_answers_from_the_same_table(exc: RagError, line: bytes, type_: str) -> None:
    from app.api.http_guard import _answer

    head, _, body = _answer(exc).partition(b"\r\n\r\n")
    assert head.startswith(line) and b"connection: close" in head
    assert b"content-length: " + str(len(body)).encode() in head
    error = orjson.loads(body)["error"]
    assert (error["type"], error["message"]) == (type_, exc.message)
    assert len(error["request_id"]) == 32
