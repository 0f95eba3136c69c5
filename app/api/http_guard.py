"""uvicorn's httptools protocol with the two bounds it lacks: a header-read timeout and a
header-size limit.

uvicorn bounds neither with httptools: the parser buffers an unfinished header line without
limit (`h11_max_incomplete_event_size` applies to the h11 implementation only, and answers a
plain 400), and no timer runs while a request's headers arrive (`timeout_keep_alive` starts
only after a response). So a client could hold memory (one 20 MB unfinished header) or a
connection (a byte per second) for as long as it liked.

Here, per connection:

- from its first byte (or from the connection's opening), a request has
  `RAG_SERVER__HEADER_TIMEOUT_S` to finish its headers; then it gets 408 and the connection is
  closed (closed without an answer if it never sent a byte);
- the request line and headers may take `RAG_SERVER__MAX_HEADER_BYTES`; a request whose headers
  have not ended within that many bytes gets 431 and the connection is closed, before the parser
  buffers more;
- uvicorn's own "invalid HTTP request" answer (smuggling shapes, garbage) is a JSON error body
  like every other error of the gateway.

Each of these answers is a domain error (RequestTimeout, HeadersTooLarge, BadHttpRequest) whose
status and body come from app/api/errors.py, like every other error answer.

After a 408 or 431 the connection is half-closed and what the client still sends is read and
dropped for at most LINGER_S (nothing is buffered), so that the client reads the answer instead
of a connection reset.

Run it with `uvicorn --http app.api.http_guard:GuardedHttpToolsProtocol` (`python -m app` does).
The limits come from the environment (`RAG_SERVER__*`), read once per process (uvicorn builds the
protocol by name, in every worker), unless a subclass sets `limits`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from app.api.errors import protocol_error
from app.errors import BadHttpRequest, HeadersTooLarge, RagError, RequestTimeout

log = logging.getLogger("rag.http")
HEADERS_END = b"\r\n\r\n"
LINGER_S = 2.0


@functools.cache
def _limits_from_env() -> tuple[float, int]:
    from app.settings import Settings

    server = Settings().server
    return server.header_timeout_s, server.max_header_bytes


def _answer(exc: RagError) -> bytes:
    """The whole answer: status line, headers and the JSON error body; the connection closes."""
    status, body = protocol_error(exc, uuid.uuid4().hex)
    head = [
        STATUS_LINE[status],
        b"content-type: application/json\r\n",
        b"content-length: " + str(len(body)).encode() + b"\r\n",
        b"connection: close\r\n",
        b"\r\n",
    ]
    return b"".join(head) + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    limits: ClassVar[tuple[float, int] | None] = None  # (header timeout s, max header bytes)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout_s, self._max_header_bytes = type(self).limits or _limits_from_env()
        self._in_headers = True  # between requests or inside a request line / headers
        self._header_bytes = 0  # bytes of the current request's head seen so far
        self._tail = b""  # last bytes of the head so far: an end split across reads
        self._timer: asyncio.TimerHandle | None = None
        self._refused = False  # answered 408/431: the rest of the input is dropped

    # the timer

    def _arm(self) -> None:
        if self._timer is None:
            self._timer = self.loop.call_later(self._header_timeout_s, self._on_header_timeout)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_header_timeout(self) -> None:
        self._timer = None
        if self.transport.is_closing() or not self._in_headers:
            return
        log.info("connection closed: headers too slow", extra={"bytes": self._header_bytes})
        if not self._header_bytes:
            self.transport.close()  # it never said anything: nothing to answer
            return
        message = f"the request headers did not arrive within {self._header_timeout_s:g}s"
        self._refuse(_answer(RequestTimeout(message)))

    def _refuse(self, answer: bytes) -> None:
        """Answer, half-close, drop further input, close after LINGER_S."""
        self._disarm()
        self._refused = True
        self.transport.write(answer)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)

    # protocol interface

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_headers and not self.transport.is_closing():
            self._arm()
            seen = self._tail + data
            end = seen.find(HEADERS_END)
            new = end + len(HEADERS_END) - len(self._tail) if end >= 0 else len(data)
            head_bytes = self._header_bytes + new
            if head_bytes > self._max_header_bytes:
                message = f"request line and headers exceed {self._max_header_bytes} bytes"
                log.info("connection closed: headers too large", extra={"bytes": head_bytes})
                self._refuse(_answer(HeadersTooLarge(message)))
                return
            self._header_bytes = head_bytes
            self._tail = seen[-(len(HEADERS_END) - 1) :]
        super().data_received(data)

    # parser callbacks

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._disarm()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_headers = True  # the next request's head starts here
        self._header_bytes = 0
        self._tail = b""

    def send_400_response(self, msg: str) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(_answer(BadHttpRequest(msg)))
            self.transport.close()
