"""An HTTP reranker test server speaking TEI `POST /rerank` (and Cohere `POST /v1/rerank`),
run by uvicorn on a free loopback port in a thread.

Told what to do with `set(mode, ...)` (every request) or `script(...)` (the next requests, in
order, then back to the standing mode):
    ok          answers; candidate i scores i / n, so reranked order is the reverse of vector order
    status      answers `status` (e.g. 503, 500, 422) with a JSON error body
    slow        waits `delay_s`, then answers ok
    hang        never answers (until the client goes away)
    malformed   200 with a body that is not JSON
    wrong_count 200 with one score fewer than candidates
    nan         200 with NaN scores

It records every request: when it started and ended, its texts, and whether it was answered, or
the client disconnected first ("disconnected"), or the server cancelled it ("cancelled").

`limit_batch(n)` makes it a stock TEI with `--max-client-batch-size n`: `GET /info` says
`max_client_batch_size: n` (with `info=False` there is no /info, as behind a proxy that hides
it), and a request with more than n texts is refused with TEI's 413.

One server serves a whole session and `new_test()` starts each test afresh; its `url` carries a
path prefix that changes with every new test (`reset()` only forgets records and behaviour). A
request a client abandoned in an earlier test (sent, then cancelled, and read by the server only
later) arrives under an old prefix: it is answered 410 and neither recorded nor given the
current test's scripted behaviour.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]
MODES = ("ok", "status", "slow", "hang", "malformed", "wrong_count", "nan")


@dataclass(frozen=True)
class Behaviour:
    mode: str = "ok"
    status: int = 503
    delay_s: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}")


@dataclass
class Record:
    path: str
    query: str
    n_texts: int
    behaviour: Behaviour
    texts: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    outcome: str = "pending"  # answered | disconnected | cancelled
    status: int | None = None


class RerankerServer:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._standing = Behaviour()
        self._script: deque[Behaviour] = deque()
        self.records: list[Record] = []
        self.max_batch: int | None = None
        self.info = False
        self.port = 0
        self.epoch = 0  # the url's path prefix; new_test() moves it on
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # --- control ------------------------------------------------------------------------------

    def set(self, mode: str = "ok", *, status: int = 503, delay_s: float = 0.0) -> None:
        with self._lock:
            self._standing = Behaviour(mode, status, delay_s)
            self._script.clear()

    def script(self, *behaviours: Behaviour) -> None:
        with self._lock:
            self._script.extend(behaviours)

    def limit_batch(self, n: int, *, info: bool = True) -> None:
        with self._lock:
            self.max_batch, self.info = n, info

    def reset(self) -> None:
        with self._lock:
            self._standing = Behaviour()
            self._script.clear()
            self.records = []
            self.max_batch, self.info = None, False

    def new_test(self) -> None:
        """Afresh for the next test, under a new prefix: what the last test's clients still
        send does not count here."""
        with self._lock:
            self.epoch += 1
        self.reset()

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.records)

    def outcomes(self) -> list[str]:
        with self._lock:
            return [r.outcome for r in self.records]

    @property
    def prefix(self) -> str:
        """The path prefix of this test's requests (the base URL's path)."""
        return f"/t{self.epoch}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    def start(self, port: int) -> RerankerServer:
        self.port = port
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=port,
            interface="asgi3",
            lifespan="off",
            log_level="error",
            access_log=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="reranker-server", daemon=True)
        self._thread.start()
        end = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > end or not self._thread.is_alive():
                raise RuntimeError("reranker test server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)

    # --- the ASGI app -------------------------------------------------------------------------

    def _next(self) -> Behaviour:
        with self._lock:
            return self._script.popleft() if self._script else self._standing

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        path, method = scope["path"], scope["method"]
        prefix = self.prefix
        if not path.startswith(prefix + "/"):
            # from an earlier test (or not through `url`): not this test's request
            await _answer(send, 410, b'{"error":"stale prefix"}')
            return
        path = path[len(prefix) :]
        if method == "GET" and path == "/health":
            await _answer(send, 200, b'{"status":"ok"}')
            return
        if method == "GET" and path == "/info" and self.info:
            info = {"model_id": "test-reranker", "max_client_batch_size": self.max_batch}
            await _answer(send, 200, json.dumps(info).encode())
            return
        if method != "POST" or path not in ("/rerank", "/v1/rerank"):
            await _answer(send, 404, b'{"error":"not found"}')
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        data = json.loads(body)
        texts = data.get("texts") or data.get("documents") or []
        limit = self.max_batch
        if limit is not None and len(texts) > limit:
            error = {"error": f"batch size {len(texts)} > maximum allowed batch size {limit}"}
            record = Record(path, str(data.get("query", "")), len(texts), Behaviour(), list(texts))
            record.outcome, record.status, record.ended = "answered", 413, time.monotonic()
            with self._lock:
                self.records.append(record)
            await _answer(send, 413, json.dumps({**error, "error_type": "Validation"}).encode())
            return
        behaviour = self._next()
        record = Record(path, str(data.get("query", "")), len(texts), behaviour, list(texts))
        with self._lock:
            self.records.append(record)
        try:
            wait = math.inf if behaviour.mode == "hang" else behaviour.delay_s
            if wait > 0 and await _disconnected_within(receive, wait):
                record.outcome = "disconnected"
                return
            status, payload = _respond(behaviour, path, len(texts))
            await _answer(send, status, payload)
            record.outcome, record.status = "answered", status
        except asyncio.CancelledError:
            record.outcome = "cancelled"
            raise
        except OSError:
            record.outcome = "disconnected"
        finally:
            record.ended = time.monotonic()


def _respond(b: Behaviour, path: str, n: int) -> tuple[int, bytes]:
    if b.mode == "status":
        return b.status, json.dumps({"error": f"told to answer {b.status}"}).encode()
    if b.mode == "malformed":
        return 200, b'{"scores": [0.1, 0.2'
    scores: list[float] = [i / n for i in range(n)]
    if b.mode == "wrong_count":
        scores = scores[:-1]
    if b.mode == "nan":
        scores = [math.nan] * n
    if path == "/rerank":
        rows: Any = [{"index": i, "score": s} for i, s in enumerate(scores)]
        rows.sort(key=lambda r: r["score"], reverse=True)
    else:
        rows = {"results": [{"index": i, "relevance_score": s} for i, s in enumerate(scores)]}
    return 200, json.dumps(rows).encode()  # allow_nan: NaN goes out as the bare token NaN


async def _answer(send: Send, status: int, payload: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def _disconnected_within(receive: Receive, seconds: float) -> bool:
    """Wait `seconds` (inf = forever); True as soon as the client disconnects."""
    pending = asyncio.ensure_future(receive())
    try:
        done, _ = await asyncio.wait({pending}, timeout=None if math.isinf(seconds) else seconds)
        return pending in done and pending.result()["type"] == "http.disconnect"
    finally:
        if not pending.done():
            pending.cancel()
