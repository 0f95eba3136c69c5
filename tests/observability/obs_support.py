"""Helpers for the observability tests: the gateway as a real uvicorn process, a real Prometheus
server, `hey` (bench's command line), an OTLP/HTTP trace receiver decoding with opentelemetry-proto,
and sums and quantiles over the samples of the text exposition format (support.prom parses it)."""

from __future__ import annotations

import gzip
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.trace import ReadableSpan
from support.httpserver import reply, serve_in_thread
from support.net import free_port
from support.paths import ROOT
from support.poll import poll
from support.prom import Samples

from app.observability.metrics import BUCKETS
from bench.loadgen import hey_command

# ---------------------------------------------------------------------------------------------
# exposition format


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def buckets(samples: Samples, name: str, **labels: str) -> dict[float, float]:
    """Cumulative bucket counts of a histogram, summed over the other labels, by `le`."""
    out: dict[float, float] = {}
    want = set(labels.items())
    for (n, ls), v in samples.items():
        if n == f"{name}_bucket" and want <= ls:
            le = float(dict(ls)["le"])
            out[le] = out.get(le, 0.0) + v
    return dict(sorted(out.items()))


def histogram_quantile(q: float, cumulative: dict[float, float]) -> float:
    """PromQL's histogram_quantile on cumulative bucket counts (linear within a bucket)."""
    bounds = sorted(cumulative)
    count = cumulative[float("inf")]
    rank = q * count
    prev_bound, prev_count = 0.0, 0.0
    for b in bounds:
        c = cumulative[b]
        if c >= rank:
            if b == float("inf"):
                return prev_bound
            return prev_bound + (b - prev_bound) * (rank - prev_count) / (c - prev_count)
        prev_bound, prev_count = b, c
    raise AssertionError("unreachable")


def bucket_of(seconds: float) -> tuple[float, float]:
    """The (lower, upper] bucket of the latency histograms (app.observability.metrics.BUCKETS)
    that holds `seconds`."""
    lower = 0.0
    for b in (*BUCKETS, float("inf")):
        if seconds <= b:
            return lower, b
        lower = b
    raise AssertionError("unreachable")


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def post_json(url: str, body: dict[str, Any], timeout: float = 10.0) -> int:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


# ---------------------------------------------------------------------------------------------
# the gateway as a real process


@dataclass
class Gateway:
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metrics(self) -> str:
        status, body = get(self.url + "/metrics")
        assert status == 200
        return body.decode()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def gateway_process(
    env: dict[str, str], tmp: Path, args: tuple[str, ...] = (), start_timeout: float = 120.0
) -> Iterator[Gateway]:
    """`python -m app --port P` with `env` on top of ours; ready when /livez answers."""
    port = free_port()
    log_path = tmp / f"gateway-{port}.log"
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **env}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app", "--port", str(port), *args],
            cwd=ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: the workers go down with it
        )
    gw = Gateway(port, proc, log_path)
    try:
        end = time.monotonic() + start_timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"gateway exited with {proc.returncode}:\n{gw.log()[-3000:]}")
            try:
                if get(gw.url + "/livez", timeout=1.0)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > end:
                raise AssertionError(f"gateway not up in {start_timeout}s:\n{gw.log()[-3000:]}")
            time.sleep(0.1)
        yield gw
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM (graceful: lifespan shutdown runs), SIGKILL to the group if it does not end."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# ---------------------------------------------------------------------------------------------
# Prometheus


@dataclass
class Prometheus:
    port: int
    proc: subprocess.Popen[bytes]

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        status, body = get(url)
        data = json.loads(body)
        assert status == 200 and data["status"] == "success", data
        result: list[dict[str, Any]] = data["data"]["result"]
        return result

    def scalar(self, promql: str) -> float:
        result = self.query(promql)
        assert len(result) == 1, (promql, result)
        return float(result[0]["value"][1])

    def targets_up(self) -> bool:
        status, body = get(f"http://127.0.0.1:{self.port}/api/v1/targets")
        if status != 200:
            return False
        active = json.loads(body)["data"]["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)


@contextmanager
def prometheus_server(target: str, tmp: Path) -> Iterator[Prometheus]:
    """A real Prometheus on loopback scraping `target` every second, storage in `tmp`."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed: `make test` installs it"
    port = free_port()
    config = tmp / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: rag-gateway\n    scrape_timeout: 900ms\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    (tmp / "tsdb").mkdir()
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp / "prometheus.log").open("wb"),
    )
    prom = Prometheus(port, proc)
    try:
        poll(
            lambda: get(f"http://127.0.0.1:{port}/-/ready", timeout=1.0)[0] == 200,
            30,
            what="prometheus ready",
        )
        yield prom
    finally:
        stop_process(proc)


# ---------------------------------------------------------------------------------------------
# hey


@dataclass
class HeyResult:
    percentiles: dict[int, float]  # 10 .. 99 -> seconds
    status_counts: dict[int, int]
    output: str


def run_hey(url: str, body: str, duration_s: int, concurrency: int) -> HeyResult:
    binary = shutil.which("hey")
    assert binary, "hey is not installed: `make test` installs it"
    out = subprocess.run(
        hey_command(url, duration_s, concurrency, body),
        capture_output=True,
        text=True,
        timeout=duration_s + 60,
        check=True,
    ).stdout
    percentiles = {int(p): float(s) for p, s in re.findall(r"^\s*(\d+)% in ([\d.]+) secs", out, re.M)}
    status = {int(c): int(n) for c, n in re.findall(r"^\s*\[(\d+)\]\s+(\d+) responses", out, re.M)}
    return HeyResult(percentiles, status, out)


# ---------------------------------------------------------------------------------------------
# OTLP/HTTP trace receiver


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    attributes: dict[str, Any]
    status_code: int
    resource: dict[str, Any]
    scope: str


def _value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, which) if which else None


@dataclass
class OtlpReceiver:
    """Accepts OTLP/HTTP protobuf exports on /v1/traces and keeps the decoded spans."""

    spans: list[Span] = field(default_factory=list)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: http.server.ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"

    def start(self) -> OtlpReceiver:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_error(400)
                    return
                receiver.add(ExportTraceServiceRequest.FromString(body))
                reply(self, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = serve_in_thread(Handler)
        return self

    def add(self, req: ExportTraceServiceRequest) -> None:
        with self.lock:
            self.requests += 1
            for rs in req.resource_spans:
                resource = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        self.spans.append(
                            Span(
                                trace_id=s.trace_id.hex(),
                                span_id=s.span_id.hex(),
                                parent_id=s.parent_span_id.hex(),
                                name=s.name,
                                kind=s.kind,
                                attributes={kv.key: _value(kv.value) for kv in s.attributes},
                                status_code=s.status.code,
                                resource=resource,
                                scope=ss.scope.name,
                            )
                        )

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def traces(self) -> dict[str, list[Span]]:
        with self.lock:
            out: dict[str, list[Span]] = {}
            for s in self.spans:
                out.setdefault(s.trace_id, []).append(s)
            return out


class _ThroughProperties(ReadableSpan):
    """A ReadableSpan of another class: the span encoder reads it through its public properties,
    not the fields of the SDK's class or of a lean span."""


def through_properties(span: ReadableSpan) -> ReadableSpan:
    """A copy of `span` (the SDK's or a lean one) that the encoder reads the slow way."""
    copy = _ThroughProperties.__new__(_ThroughProperties)
    copy.__dict__.update(vars(span))
    return copy
