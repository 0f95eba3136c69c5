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
import sys
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
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
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


def setup_logging(level: str) -> None:
    """Route the root logger (and uvicorn's) to one JSON line per record on stdout."""
    handler = logging.StreamHandler(sys.stdout)
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
