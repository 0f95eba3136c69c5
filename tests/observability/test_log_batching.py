"""The log handler gathers access lines and writes them together: nothing is lost, nothing
reordered, and any other line, a warning or a full buffer is never held back."""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from obs_support import gateway_process, stop_process

from app.observability.logging import BatchingStreamHandler, JsonFormatter


class Stream:
    """A stream that records each write and each flush."""

    def __init__(self) -> None:
        self.writes: list[str] = []
        self.flushes = 0
        self.written = threading.Event()

    def write(self, text: str) -> int:
        self.writes.append(text)
        self.written.set()
        return len(text)

    def flush(self) -> None:
        self.flushes += 1

    def events(self) -> list[str]:
        return [json.loads(line)["event"] for text in self.writes for line in text.splitlines()]


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    lg = logging.getLogger("rag.access")
    saved = lg.propagate, lg.level
    lg.propagate = False
    lg.setLevel(logging.INFO)
    yield lg
    for h in lg.handlers:
        h.close()
    lg.handlers[:] = []
    lg.propagate, lg.level = saved


def attach(lg: logging.Logger, interval_s: float) -> tuple[BatchingStreamHandler, Stream]:
    stream = Stream()
    handler = BatchingStreamHandler(stream, interval_s)
    handler.setFormatter(JsonFormatter())
    lg.addHandler(handler)
    return handler, stream


def test_info_lines_are_written_together_by_the_flusher(logger: logging.Logger) -> None:
    handler, stream = attach(logger, 0.05)
    assert handler.lock is not None
    with handler.lock:  # the flusher writes under this lock: all three lines land in one write
        for i in range(3):
            logger.info(f"line {i}")
        assert stream.writes == []  # nothing written per line
    assert stream.written.wait(10)
    assert stream.writes == ["".join(stream.writes)] and stream.events() == ["line 0", "line 1", "line 2"]
    assert stream.flushes == 1
    # the flusher sleeps until the next line, then writes it too
    stream.written.clear()
    logger.info("line 3")
    assert stream.written.wait(10)
    assert stream.events() == ["line 0", "line 1", "line 2", "line 3"] and len(stream.writes) == 2


def test_a_warning_writes_at_once_after_the_lines_before_it(logger: logging.Logger) -> None:
    _, stream = attach(logger, 60)  # the flusher would wait a minute
    logger.info("first")
    logger.info("second")
    logger.warning("trouble")
    assert stream.events() == ["first", "second", "trouble"] and len(stream.writes) == 1
    assert stream.flushes == 1


def test_other_lines_are_written_at_once_after_the_gathered_ones(logger: logging.Logger) -> None:
    handler, stream = attach(logger, 60)
    other = logging.getLogger("rag.test.other")
    other.propagate = False
    other.setLevel(logging.INFO)
    other.addHandler(handler)
    try:
        logger.info("request 1")
        other.info("Finished server process")  # as uvicorn's last line, just before a signal ends it
        assert stream.events() == ["request 1", "Finished server process"] and len(stream.writes) == 1
    finally:
        other.removeHandler(handler)


def test_a_full_buffer_is_written_at_once(logger: logging.Logger) -> None:
    _, stream = attach(logger, 60)
    logged = 0
    while not stream.writes and logged < 1000:
        logger.info("x" * 1000, extra={"i": logged})
        logged += 1
    # written by the line that took the gathered text past the bound, without waiting
    (text,) = stream.writes
    assert len(text) >= BatchingStreamHandler.MAX_PENDING > len(text) - len(text.splitlines()[-1]) - 1
    assert [json.loads(line)["i"] for line in text.splitlines()] == list(range(logged))


def test_flush_and_close_write_what_is_pending(logger: logging.Logger) -> None:
    handler, stream = attach(logger, 60)
    logger.info("pending")
    handler.flush()  # what logging.shutdown does at exit
    assert stream.events() == ["pending"]
    logger.info("at close")
    handler.close()
    logging.shutdown([lambda: handler])  # type: ignore[list-item]
    assert stream.events() == ["pending", "at close"]


def test_interval_zero_writes_and_flushes_every_line(logger: logging.Logger) -> None:
    _, stream = attach(logger, 0)
    logger.info("a")
    logger.info("b")
    assert stream.events() == ["a", "b"] and len(stream.writes) == 2 and stream.flushes == 2


def test_many_threads_lose_and_reorder_nothing(logger: logging.Logger) -> None:
    handler, stream = attach(logger, 0.001)

    def work(t: int) -> None:
        for i in range(300):
            logger.info("n", extra={"t": t, "i": i})
            if i % 97 == 0:
                time.sleep(0.002)  # let the flusher write between lines

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    handler.flush()
    lines = [json.loads(line) for text in stream.writes for line in text.splitlines()]
    assert len(stream.writes) > 1  # the flusher wrote along the way
    for t in range(4):
        assert [r["i"] for r in lines if r["t"] == t] == list(range(300))


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=0, max_value=4e9, allow_nan=False), st.floats(min_value=0, max_value=4e9))
def test_timestamps_match_strftime_whatever_the_order(first: float, second: float) -> None:
    fmt = JsonFormatter()
    for created in (first, second, first):
        record = logging.makeLogRecord({"msg": "m", "created": created, "msecs": (created % 1) * 1000})
        want = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(record.msecs):03d}Z"
        assert json.loads(fmt.format(record))["ts"] == want


def test_the_last_access_lines_are_written_when_sigterm_stops_the_gateway(
    tmp_path: Path, qdrant_path: Path, model_dir: Path
) -> None:
    """uvicorn ends a process stopped by SIGTERM by raising the signal again, so nothing runs at
    exit: the gathered lines must be out before that (uvicorn's own shutdown lines, written at
    once, take them along; the end of the lifespan writes them too)."""
    env = {
        "RAG_QDRANT__PATH": str(qdrant_path),
        "RAG_EMBEDDER__MODEL_DIR": str(model_dir),
        "RAG_LOGGING__FLUSH_INTERVAL_S": "5",  # the flusher would wait longer than the test
    }
    with gateway_process(env, tmp_path) as gw:
        for i in range(3):
            r = httpx.post(
                gw.url + "/rag", json={"q": "chess", "k": 5}, headers={"X-Request-ID": f"last-{i}"}
            )
            assert r.status_code == 200
        stop_process(gw.proc)
        assert gw.proc.returncode == -signal.SIGTERM  # as uvicorn ends it: no exit handlers ran
        lines = [json.loads(line) for line in gw.log().splitlines() if line.startswith("{")]
    ids = [r.get("request_id") for r in lines if r["logger"] == "rag.access"]
    assert [i for i in ids if str(i).startswith("last-")] == ["last-0", "last-1", "last-2"]
    assert lines[-1]["event"].startswith("Finished server process")  # and every line after them
