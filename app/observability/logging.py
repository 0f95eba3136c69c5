"""JSON logs: one line per record on stdout. The encoder escapes newlines in values, so one event is
always one line, whatever a query or an exception message contains; text no UTF-8 encoder takes
(a lone surrogate a client sent) is written escaped (`\\ud800`) instead of failing the record.

Every record carries the request id and trace id of the request it was logged in (a context
variable set by the middleware; the current span), so event lines join up with the access line.
No query text unless `logging.log_query` is on; no secrets: credentials in URLs
(`redis://user:password@host`) and `password=`/`token=`-style parameters are masked in the
finished line, whichever field or exception text they came in.
"""

from __future__ import annotations

import logging
import re
import select
import sys
import threading
import time
from contextvars import ContextVar
from typing import Any

import orjson
from opentelemetry import trace

# uvicorn adds `color_message` (the event again, with terminal colour codes)
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "color_message"}
REQUEST_ID: ContextVar[str] = ContextVar("rag_request_id", default="")
# the character classes stop at quotes and backslashes, so masking never breaks the JSON line
_URL_CREDENTIALS = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)[^/\s@\"\\]*@")
_SECRET_PARAM = re.compile(
    r"(?P<key>\b(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key)=)[^&\s\"\\]+", re.IGNORECASE
)


def redact(text: str) -> str:
    """Mask URL credentials and secret-looking query parameters."""
    if "@" in text:
        text = _URL_CREDENTIALS.sub(r"\g<scheme>***@", text)
    if "=" in text:
        text = _SECRET_PARAM.sub(r"\g<key>***", text)
    return text


def redact_url(url: str | None) -> str | None:
    return None if url is None else redact(url)


class JsonFormatter(logging.Formatter):
    _second: tuple[int, str] = (-1, "")

    def _ts(self, record: logging.LogRecord) -> str:
        second, text = self._second
        if int(record.created) != second:  # one strftime per second, not per record
            second = int(record.created)
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, text)  # one assignment: threads sharing us see a matching pair
        return f"{text}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": self._ts(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in _RESERVED and not k.startswith("_"):
                out[k] = v
        if "request_id" not in out and (rid := REQUEST_ID.get()):
            out["request_id"] = rid
        if "trace_id" not in out:
            ctx = trace.get_current_span().get_span_context()
            if ctx.is_valid:
                out["trace_id"] = format(ctx.trace_id, "032x")
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        try:
            line = orjson.dumps(out, default=str)
        except TypeError:  # a lone surrogate, an integer beyond 64 bits: escape and try again
            line = orjson.dumps(_encodable(out), default=lambda v: _encodable(str(v)))
        return redact(line.decode())


def _encodable(value: Any, depth: int = 0) -> Any:
    """`value` with every string UTF-8-encodable (lone surrogates escaped) and every integer
    within 64 bits (else its text); containers copied, nesting cut at 32 levels."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if depth >= 32:
        return _encodable(repr(value), depth)
    if isinstance(value, dict):
        return {_encodable(str(k), depth + 1): _encodable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_encodable(v, depth + 1) for v in value]
    return _encodable(str(value), depth)


class BatchingStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Access lines (INFO records of `batched`, one per request) are written together: a flusher
    thread writes what has gathered at most `interval_s` after the first of them. Every other
    line is written at once, after the gathered lines (order is kept), and so is everything once
    64 KiB have gathered. The app flushes at the end of its lifespan, after the last request.
    `interval_s` 0: one write and flush per record, as `logging.StreamHandler`.

    Gathered lines go out in writes of at most PIPE_BUF bytes (a longer line alone, as before):
    the kernel writes those to a pipe whole, so lines of several workers sharing a pipe never
    interleave, and a signal cannot cut one short (stdout is unbuffered in the image, and an
    unbuffered stream does not retry a short write).

    Why: a write per line (a pipe to the container runtime) cost a cached /rag answer up to a
    third of its CPU. A process killed without a shutdown (SIGKILL, OOM) loses at most the
    access lines of its last `interval_s`."""

    MAX_PENDING = 64 * 1024  # bytes
    CHUNK = select.PIPE_BUF

    def __init__(self, stream: Any, interval_s: float, batched: str = "rag.access") -> None:
        super().__init__(stream)
        self.interval_s = interval_s
        self.batched = batched
        self._pending: list[tuple[str, int]] = []  # (line, its size in bytes)
        self._pending_bytes = 0
        self._due = threading.Event()
        self._flusher: threading.Thread | None = None
        self._closed = False

    def emit(self, record: logging.LogRecord) -> None:
        if self.interval_s <= 0:
            super().emit(record)
            return
        try:  # called holding the handler's lock (Handler.handle)
            line = self.format(record) + self.terminator
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)
            return
        # the formatter escapes lone surrogates, so a UTF-8 stdout writes exactly these bytes
        size = len(line) if line.isascii() else len(line.encode("utf-8", "backslashreplace"))
        self._pending.append((line, size))
        self._pending_bytes += size
        if (
            record.name != self.batched
            or record.levelno != logging.INFO
            or self._pending_bytes >= self.MAX_PENDING
            or self._closed
            or (len(self._pending) == 1 and not self._start_flusher())
        ):
            self._write_pending(record)
        elif len(self._pending) == 1:
            self._due.set()

    def _start_flusher(self) -> bool:
        """Whether a flusher thread runs (it cannot start while the interpreter shuts down)."""
        if self._flusher is None or not self._flusher.is_alive():
            try:
                thread = threading.Thread(target=self._flush_loop, name="log-flush", daemon=True)
                thread.start()
            except RuntimeError:
                return False
            self._flusher = thread
        return True

    def _write_pending(self, record: logging.LogRecord | None = None) -> None:
        """Write what has gathered, a flush per write (one system call each, also on a buffered
        stream); the caller holds the handler's lock. A failing write costs its lines, never the
        caller and never the other writes (as StreamHandler, reported once)."""
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        chunks: list[str] = []
        chunk: list[str] = []
        size = 0
        for line, n in pending:
            if chunk and size + n > self.CHUNK:
                chunks.append("".join(chunk))
                chunk, size = [], 0
            chunk.append(line)
            size += n
        if chunk:
            chunks.append("".join(chunk))
        failed = False
        for text in chunks or [""]:
            try:
                if text:
                    self.stream.write(text)
                super().flush()
            except RecursionError:
                raise
            except Exception:
                failed = True
        if failed:
            lost = {"msg": "log lines lost", "levelno": logging.ERROR}
            self.handleError(record or logging.makeLogRecord(lost))

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_pending()

    def close(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._closed = True  # from now on every line is written at once
            self._write_pending()
        self._due.set()  # the flusher wakes, sees the handler closed and ends
        super().close()

    def _flush_loop(self) -> None:
        while not self._closed:
            self._due.wait()
            if self._closed:
                return
            time.sleep(self.interval_s)  # let the lines of this interval gather
            self._due.clear()  # before writing: a line added after the write sets it again
            self.flush()  # never raises: a failing stream is reported by handleError


def setup_logging(level: str, flush_interval_s: float = 0.0) -> None:
    """Route the root logger (and uvicorn's) to one JSON line per record on stdout; access lines
    written together at most every `flush_interval_s` (`BatchingStreamHandler`)."""
    handler = BatchingStreamHandler(sys.stdout, flush_interval_s)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    # the gateway writes its own access line with request id, route and cache outcome
    logging.getLogger("uvicorn.access").disabled = True
    # the lines carry none of the caller's file, thread or process: don't collect them for every
    # record (the logging documentation's "Optimization" section)
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # no stack walk to find the caller


def flush_logs() -> None:
    """Write every gathered line now (uvicorn ends a process stopped by a signal by raising the
    signal again once the lifespan is over, so nothing runs at exit)."""
    for handler in logging.getLogger().handlers:
        handler.flush()
