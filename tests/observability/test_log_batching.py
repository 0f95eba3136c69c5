"""The log handler gathers access lines and writes them together: nothing is lost, nothing
reordered, and any other line, a warning or a full buffer is never held back."""

from __future__ import annotations

import json
import logging
import select
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from obs_support import gateway_process, stop_process
from support.app import running_app

from app.observability.logging import BatchingStreamHandler, JsonFormatter


class Stream:
    """A stream that records each write and each flush; `fail` makes both raise."""

    def __init__(self) -> None:
        self.writes: list[str] = []
        self.flushes = 0
        self.flushed_after: list[int] = []  # how many writes each flush came after
        self.flushed = threading.Event()
        self.fail: Exception | None = None
        self.failed = 0  # writes refused while `fail` was set

    def write(self, text: str) -> int:
        if self.fail is not None:
            self.failed += 1
            raise self.fail
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        if self.fail is not None:
            raise self.fail
        self.flushes += 1
        self.flushed_after.append(len(self.writes))
        self.flushed.set()

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
    assert stream.flushed.wait(10)
    assert len(stream.writes) == 1 and stream.events() == ["line 0", "line 1", "line 2"]
    assert stream.flushes == 1
    # the flusher sleeps until the next line, then writes it too
    stream.flushed.clear()
    logger.info("line 3")
    assert stream.flushed.wait(10)
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
    # written by the line that took the gathered bytes past the bound, without waiting
    text = "".join(stream.writes)
    assert len(text) >= BatchingStreamHandler.MAX_PENDING > len(text) - len(text.splitlines()[-1]) - 1
    assert [json.loads(line)["i"] for line in text.splitlines()] == list(range(logged))
    assert stream.flushed_after == list(range(1, len(stream.writes) + 1))  # all at once, each flushed


def test_writes_hold_whole_lines_and_at_most_pipe_buf_bytes(logger: logging.Logger) -> None:
    """Whole lines of at most PIPE_BUF bytes per write: a pipe takes them atomically, so a
    signal cannot cut one short and several workers' lines never interleave."""
    handler, stream = attach(logger, 60)
    handler.MAX_PENDING = 10**9  # only this test's flush writes
    sizes = [100, 700, 3000, 5000, 10, 4000, 200, 9000, 50, 4096 - 60] * 3
    for i, n in enumerate(sizes):
        logger.info("é" * (n // 2) if i % 2 else "x" * n, extra={"i": i})  # some lines not ASCII
    handler.flush()
    got: list[int] = []
    for text in stream.writes:
        lines = text.splitlines(keepends=True)
        assert all(line.endswith("\n") for line in lines)
        if len(lines) > 1:  # several lines together only within PIPE_BUF bytes
            assert len(text.encode()) <= select.PIPE_BUF
        got += [json.loads(line)["i"] for line in lines]
    assert got == list(range(len(sizes)))
    # and no write that could have taken the next line too
    for text, after in zip(stream.writes, stream.writes[1:], strict=False):
        assert len(text.encode()) + len(after.splitlines(keepends=True)[0].encode()) > select.PIPE_BUF
    # a flush after every write: one system call each, also on a buffered stream
    assert stream.flushed_after == list(range(1, len(stream.writes) + 1))


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
        for i in range(100):  # 400 short lines: well under the 64 KiB bound
            logger.info("n", extra={"t": t, "i": i})
            if t == 0 and i == 50:
                # halfway, until the flusher has written (no timing: a wait on its write)
                assert stream.flushed.wait(10)
            elif i % 20 == 0:
                time.sleep(0.005)  # let the flusher write between lines

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    by_flusher = stream.flushes
    handler.flush()
    lines = [json.loads(line) for text in stream.writes for line in text.splitlines()]
    assert by_flusher > 0  # the flusher wrote along the way
    assert sorted((r["t"], r["i"]) for r in lines) == [(t, i) for t in range(4) for i in range(100)]
    for t in range(4):
        assert [r["i"] for r in lines if r["t"] == t] == list(range(100))


def test_a_failing_stream_costs_lines_never_the_caller_or_the_flusher(
    logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logging, "raiseExceptions", False)  # no report on stderr from handleError
    handler, stream = attach(logger, 0.01)
    stream.fail = BrokenPipeError(32, "Broken pipe")
    logger.warning("lost: written at once, into a broken pipe")  # must not raise here
    assert stream.failed == 1
    logger.info("lost: written by the flusher, into a broken pipe")
    flusher = handler._flusher
    assert flusher is not None
    end = time.monotonic() + 10
    while stream.failed < 2 and time.monotonic() < end:  # the flusher meets the broken stream
        time.sleep(0.01)
    assert stream.failed == 2
    stream.fail = None
    stream.flushed.clear()
    logger.info("after")
    assert stream.flushed.wait(10)
    assert stream.events() == ["after"]
    assert handler._flusher is flusher and flusher.is_alive()  # the same flusher, still at work


def test_close_writes_what_is_pending_and_ends_the_flusher(logger: logging.Logger) -> None:
    handler, stream = attach(logger, 60)
    logger.info("pending")
    flusher = handler._flusher
    assert flusher is not None and flusher.is_alive()
    handler.close()
    assert stream.events() == ["pending"]
    flusher.join(10)
    assert not flusher.is_alive()
    logger.info("after close")  # still attached: written at once, no new flusher
    assert stream.events() == ["pending", "after close"] and handler._flusher is flusher


async def test_the_lifespan_writes_the_gathered_access_lines(settings_factory: Any) -> None:
    """Only access lines reach this handler, and its flusher waits a minute: only the end of the
    lifespan can write the line."""
    stream = Stream()
    handler = BatchingStreamHandler(stream, 60)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(lambda r: r.name == "rag.access")
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        async with running_app(settings_factory()) as (client, _):
            r = await client.get("/livez", headers={"X-Request-ID": "before-the-end"})
            assert r.status_code == 200
            assert stream.writes == []  # gathered, not written
        ids = [json.loads(line)["request_id"] for text in stream.writes for line in text.splitlines()]
        assert ids == ["before-the-end"]
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


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
    exit: the gathered lines must be out before that, as the operator sees it (uvicorn's own
    shutdown lines, written at once, take them along; the test above covers the lifespan)."""
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
