"""Logs as an operator reads them: the JSON lines the gateway's handler writes (captured from the
real formatter), one per request and per notable event, no query text unless asked, no secrets,
one record whatever a query contains."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from support.app import running_app
from support.net import free_port

from app.observability.logging import JsonFormatter, redact

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


class Captured:
    def __init__(self) -> None:
        self.stream = io.StringIO()

    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines()]  # every line is one JSON object

    def access(self) -> list[dict[str, Any]]:
        return [r for r in self.records() if r["logger"] == "rag.access"]


@pytest.fixture
def logs() -> Iterator[Captured]:
    """The gateway's JSON formatter on a handler of the root logger, at INFO, for one test."""
    cap = Captured()
    handler = logging.StreamHandler(cap.stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield cap
    root.removeHandler(handler)
    root.setLevel(level)


async def test_one_access_line_per_request_with_its_fields(logs: Captured, settings_factory: Any) -> None:
    async with running_app(settings_factory()) as (client, _):
        r = await client.post(
            "/rag",
            json={"q": "how to calibrate espresso grinder", "k": 10},
            headers={"X-Request-ID": "req-42", "traceparent": f"00-{TRACE_ID}-b7ad6b7169203331-01"},
        )
        await client.get("/no/such/page")
    assert r.status_code == 200
    (line,) = [a for a in logs.access() if a["request_id"] == "req-42"]
    assert line["trace_id"] == TRACE_ID  # tracing is off here: the caller's trace id still joins up
    assert line["route"] == "/rag" and line["method"] == "POST" and line["status"] == 200
    assert line["cache"] == "miss" and line["degraded"] == []
    assert 0 < line["duration_ms"] < 60_000
    assert line["level"] == "info" and line["event"] == "request" and line["ts"].endswith("Z")
    (missing,) = [a for a in logs.access() if a["status"] == 404]
    assert missing["route"] == "unmatched" and "cache" not in missing
    assert "calibrate" not in logs.stream.getvalue()  # no query text by default
    assert all("query" not in rec for rec in logs.records())


async def test_query_is_logged_only_when_enabled_and_newlines_stay_in_one_record(
    logs: Captured, settings_factory: Any
) -> None:
    query = 'line one\nline two\r\n{"level": "error", "event": "forged"}\n'
    async with running_app(settings_factory(logging={"log_query": True})) as (client, _):
        r = await client.post("/rag", json={"q": query, "k": 5}, headers={"X-Request-ID": "nl-1"})
    assert r.status_code == 200
    mine = [line for line in logs.lines() if "nl-1" in line]
    assert len(mine) == 1
    record = json.loads(mine[0])
    assert record["query"] == " ".join(query.split())  # the query as searched (whitespace normalised)
    assert not any(rec.get("event") == "forged" for rec in logs.records())


def test_newlines_anywhere_in_a_record_stay_in_one_line() -> None:
    """Whatever carries the newline (message, a field, an exception's traceback), one record is
    one line and parses back to the same text."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("rag.test.newlines")
    log.addHandler(handler)
    log.propagate = False
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        log.exception("first\nsecond", extra={"query": "a\nb\r\nc", "request_id": "r-1"})
    log.removeHandler(handler)
    (line,) = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["event"] == "first\nsecond" and record["query"] == "a\nb\r\nc"
    assert "ValueError: bad\nthing" in record["exc"] and record["exc"].count("\n") >= 3


async def test_notable_events_are_lines_of_their_own_tied_to_the_request(
    logs: Captured, settings_factory: Any
) -> None:
    settings = settings_factory(
        reranker={"kind": "http", "url": f"http://127.0.0.1:{free_port()}", "timeout_s": 0.2},
        resilience={"breaker_window": 2, "breaker_min_calls": 2, "retry_attempts": 0},
    )
    async with running_app(settings) as (client, _):
        for i in range(3):
            r = await client.post(
                "/rag", json={"q": "knight fork", "k": 5}, headers={"X-Request-ID": f"ev-{i}"}
            )
            assert r.status_code == 200
    access = {a["request_id"]: a for a in logs.access() if a["request_id"].startswith("ev-")}
    assert all(a["degraded"] for a in access.values())  # reasons, e.g. ["unavailable"]
    (opened,) = [rec for rec in logs.records() if rec["event"] == "circuit breaker open"]
    assert opened["level"] == "warning" and opened["dependency"] == "reranker"
    assert opened["request_id"] in access  # the request that tripped it
    assert access["ev-2"]["degraded"] == ["circuit_open"]


async def test_no_secrets_in_any_line(logs: Captured, settings_factory: Any, redis_url: str) -> None:
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    secret_url = f"redis://cache-user:hunter2-s3cret@127.0.0.1:{port}/0"
    async with running_app(settings_factory(redis={"url": secret_url})) as (client, _):
        r = await client.post("/rag", json={"q": "chess endgames", "k": 5})
    assert r.status_code == 200
    text = logs.stream.getvalue()
    assert "hunter2-s3cret" not in text
    assert "redis://***@127.0.0.1" in text  # the Redis line is there, credentials masked


def test_redaction_keeps_lines_valid_json() -> None:
    line = json.dumps(
        {
            "a": "redis://u:p4ss@h:6379/0 and https://x:tok@example.com/p",
            "b": "dsn?password=pw1&x=1 token=t0k",
        }
    )
    masked = redact(line)
    assert json.loads(masked) == {
        "a": "redis://***@h:6379/0 and https://***@example.com/p",
        "b": "dsn?password=***&x=1 token=***",
    }
    assert redact('{"e": "user:pw\\"@host"}') == '{"e": "user:pw\\"@host"}'  # not a URL: untouched
