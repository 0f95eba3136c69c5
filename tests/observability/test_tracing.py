"""Traces, as a collector sees them: the app exports OTLP/HTTP to a receiver in the test that decodes
the protobuf. One trace per request, the incoming trace id kept, stage spans under the server span
with their attributes, client spans for the Redis and HTTP calls, nothing for probes; and a
collector that never answers neither blocks requests nor holds up shutdown."""

from __future__ import annotations

import asyncio
import http.server
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from obs_support import OtlpReceiver, Span
from support.app import running_app
from support.httpserver import reply, serve_in_thread
from support.net import free_port

SERVER, CLIENT, INTERNAL = 2, 3, 1  # opentelemetry.proto.trace.v1.Span.SpanKind
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


class TeiReranker:
    """A text-embeddings-inference style `/rerank` endpoint, so the gateway makes real outgoing
    HTTP calls; it records the `traceparent` each call carried."""

    def __init__(self) -> None:
        self.traceparents: list[str | None] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.traceparents.append(self.headers.get("traceparent"))
                scores = [{"index": i, "score": 1.0 / (1 + i)} for i in range(len(body["texts"]))]
                reply(self, json.dumps(scores).encode(), "application/json")

            def do_GET(self) -> None:
                reply(self, b"ok", "application/json")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = serve_in_thread(Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    r = OtlpReceiver().start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", r.endpoint)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "rag-gateway-test")
    yield r
    r.stop()


@pytest.fixture
def tei() -> Iterator[TeiReranker]:
    t = TeiReranker()
    yield t
    t.stop()


def _children(spans: list[Span], parent: Span) -> dict[str, Span]:
    kids = [s for s in spans if s.parent_id == parent.span_id]
    out = {s.name: s for s in kids}
    assert len(out) == len(kids), [s.name for s in kids]  # one of each name
    return out


async def _flush(app: Any) -> None:
    await app.state.rag.pipeline.drain()  # background cache writes end their spans
    assert app.state.rag.tracer_provider.force_flush()


async def test_one_trace_per_request_with_stage_and_client_spans(
    receiver: OtlpReceiver, tei: TeiReranker, settings_factory: Any
) -> None:
    settings = settings_factory(reranker={"kind": "http", "url": tei.url})
    async with running_app(settings) as (client, app):
        r1 = await client.post(
            "/rag",
            json={"q": "espresso grind size", "k": 30},
            headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
        )
        r2 = await client.post("/rag", json={"q": "espresso grind size", "k": 30, "ef": 80})
        for path in ("/livez", "/readyz", "/metrics"):
            assert (await client.get(path)).status_code == 200
        await _flush(app)
    assert r1.status_code == r2.status_code == 200
    assert (r1.json()["cache"], r2.json()["cache"]) == ("miss", "hit")

    traces = receiver.traces()
    assert len(traces) == 2, {t: [s.name for s in ss] for t, ss in traces.items()}  # probes untraced
    assert TRACE_ID in traces
    # the outgoing rerank call carried our trace on to the reranker
    assert len(tei.traceparents) == 1 and tei.traceparents[0] is not None
    assert tei.traceparents[0].split("-")[1] == TRACE_ID

    for trace_id, spans in traces.items():
        ids = {s.span_id for s in spans}
        roots = [s for s in spans if s.parent_id not in ids]
        assert len(roots) == 1, [(s.name, s.parent_id) for s in roots]
        server = roots[0]
        assert server.kind == SERVER and server.name == "POST /rag"
        assert server.resource["service.name"] == "rag-gateway-test"
        assert server.attributes["http.route"] == "/rag"
        assert server.attributes["http.request.method"] == "POST"
        assert server.attributes["http.response.status_code"] == 200
        assert server.attributes["rag.request_id"]
        stages = _children(spans, server)
        assert set(stages) == {"embed", "search", "rerank"}
        assert all(s.kind == INTERNAL for s in stages.values())
        search = stages["search"].attributes
        assert search["rag.k"] == 30 and search["rag.candidates"] == 30
        assert stages["embed"].attributes["rag.embedder"]
        rerank = _children(spans, stages["rerank"])
        # the rerank-cache lookup is the Redis client span itself, straight under `rerank`
        redis_get = rerank["GET"]
        assert redis_get.kind == CLIENT and redis_get.attributes["db.system"] == "redis"
        assert "espresso" not in json.dumps(redis_get.attributes)  # statement sanitised
        assert not _children(spans, redis_get)

        if trace_id == TRACE_ID:  # first request: miss, reranker called over HTTP, scores stored
            assert server.parent_id == PARENT_ID
            assert server.attributes["rag.cache"] == "miss"
            assert search["rag.ef"] == 512  # RAG_QDRANT__EF_DEFAULT
            assert stages["rerank"].attributes["rag.cache"] == "miss"
            assert stages["rerank"].attributes["rag.reranked"] is True
            # the lookup, the reranker call, and the scores stored (may end after the answer)
            assert set(rerank) == {"GET", "POST", "SET"}
            assert rerank["SET"].kind == CLIENT
            http_call = rerank["POST"]
            assert http_call.kind == CLIENT
            assert 200 in (
                http_call.attributes.get("http.status_code"),
                http_call.attributes.get("http.response.status_code"),
            )
            assert len(spans) == 7
        else:  # second request: a cache hit, no reranker call
            assert server.parent_id == ""
            assert server.attributes["rag.cache"] == "hit"
            assert search["rag.ef"] == 80
            assert stages["rerank"].attributes["rag.cache"] == "hit"
            assert set(rerank) == {"GET"}
            assert len(spans) == 5


async def test_degraded_reason_is_on_the_spans(receiver: OtlpReceiver, settings_factory: Any) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    settings = settings_factory(
        reranker={"kind": "http", "url": dead, "timeout_s": 0.2},
        resilience={"retry_attempts": 0},
    )
    async with running_app(settings) as (client, app):
        r = await client.post("/rag", json={"q": "sourdough hydration", "k": 5})
        await _flush(app)
    assert r.status_code == 200
    reason = r.json()["degraded"][0]["reason"]
    (spans,) = receiver.traces().values()
    by_name = {s.name: s for s in spans}
    assert by_name["rerank"].attributes["rag.degraded_reason"] == reason
    assert by_name["POST /rag"].attributes["rag.degraded"] == [reason]
    failed_call = by_name["POST"]
    assert failed_call.kind == CLIENT and failed_call.status_code == 2  # STATUS_CODE_ERROR
    assert failed_call.parent_id == by_name["rerank"].span_id


async def test_black_holed_collector_blocks_neither_requests_nor_shutdown(
    monkeypatch: pytest.MonkeyPatch, settings_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The collector accepts connections and never answers. Requests keep being served while an
    export hangs on it, and shutdown gives up on the export after its bound (2 s) instead of the
    export timeout (10 s here) or the SDK's 30 s."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)
    held: list[socket.socket] = []

    def swallow() -> None:
        while True:
            try:
                conn, _ = hole.accept()
            except OSError:
                return
            held.append(conn)  # never read, never answered

    threading.Thread(target=swallow, daemon=True).start()
    monkeypatch.setenv(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"http://127.0.0.1:{hole.getsockname()[1]}/v1/traces"
    )
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "10")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")  # export soon after the first span
    try:
        async with running_app(settings_factory(reranker={"kind": "none"})) as (client, _):
            assert (await client.post("/rag", json={"q": "chess openings", "k": 5})).status_code == 200
            deadline = time.monotonic() + 10
            while not held and time.monotonic() < deadline:
                await client.get("/livez")
                await asyncio.sleep(0.05)
            assert held, "the exporter never connected to the collector"
            # an export is stuck on the collector now; requests are still answered
            for _ in range(5):
                assert (await client.post("/rag", json={"q": "chess openings", "k": 5})).status_code == 200
            caplog.set_level(logging.WARNING, logger="rag.tracing")
        # shutdown returned while the export was still stuck on the collector: it gave up at its
        # bound instead of waiting for the export timeout (the export thread was still alive)
        gave_up = [
            r for r in caplog.records if r.name == "rag.tracing" and "did not finish" in r.getMessage()
        ]
        assert len(gave_up) == 1, [r.getMessage() for r in caplog.records]
        assert gave_up[0].timeout_s == 2.0
    finally:
        hole.close()
        for c in held:
            c.close()


@pytest.mark.filterwarnings("ignore:Failed to obtain server version")
async def test_every_http_and_redis_client_is_instrumented_on_our_provider_only() -> None:
    """Client spans come from instrumenting our client instances with the app's provider: the
    Qdrant server client, the HTTP embedder and reranker, and the one Redis client; nothing global."""
    from opentelemetry.sdk.trace import TracerProvider

    from app.clients.embedder import HttpEmbedder
    from app.clients.redis_client import RedisClient
    from app.clients.rerank import HttpReranker
    from app.clients.vectorstore import ServerStore
    from app.observability.tracing import _library_client, instrument_clients
    from app.resilience import BreakerConfig, CircuitBreaker
    from app.settings import EmbedderSettings, QdrantSettings, RedisSettings, RerankerSettings

    def clients() -> list[Any]:
        return [
            ServerStore.from_settings(QdrantSettings(url=f"http://127.0.0.1:{free_port()}")),
            HttpEmbedder.from_settings(EmbedderSettings(kind="http", url="http://127.0.0.1:1")),
            HttpReranker.from_settings(RerankerSettings(kind="http", url="http://127.0.0.1:1")),
            RedisClient.from_settings(
                RedisSettings(url="redis://127.0.0.1:1/0"), CircuitBreaker("redis", BreakerConfig())
            ),
        ]

    def instrumented(owner: Any) -> bool:
        lib = _library_client(owner._client)
        return bool(getattr(lib, "_is_instrumented_by_opentelemetry", False))

    plain = clients()
    instrument_clients(None, *plain)  # tracing off: untouched
    assert not any(instrumented(c) for c in plain)
    traced = clients()
    instrument_clients(TracerProvider(), *traced)
    assert all(instrumented(c) for c in traced)
    assert not any(instrumented(c) for c in plain)  # instances, not the libraries
    for c in plain + traced:
        await c.aclose()


def test_hashed_resource_is_the_same_resource_to_the_encoder() -> None:
    """The provider's resource hashes once; to a dict, and so to the OTLP encoder's grouping, it
    is the resource it wraps: one resource group with its attributes, for spans made apart."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    from app.observability.tracing import HashedResource

    plain = Resource.create({"service.name": "svc", "deployment.environment": "test"})
    hashed = HashedResource(plain)
    assert hashed == plain and plain == hashed and hash(hashed) == hash(plain)
    assert {plain: 1}[hashed] == 1 and dict(hashed.attributes) == dict(plain.attributes)
    assert hashed != Resource.create({"service.name": "other"})

    class Keep(SpanExporter):
        def __init__(self) -> None:
            self.spans: list[ReadableSpan] = []

        def export(self, spans: Any) -> SpanExportResult:
            self.spans.extend(spans)
            return SpanExportResult.SUCCESS

    kept = Keep()
    provider = TracerProvider(resource=hashed, shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(kept))
    for name in ("a", "b", "c"):
        provider.get_tracer("t").start_span(name).end()
    request = encode_spans(kept.spans)
    assert len(request.resource_spans) == 1
    (group,) = request.resource_spans
    assert {kv.key: kv.value.string_value for kv in group.resource.attributes}["service.name"] == "svc"
    assert sorted(s.name for ss in group.scope_spans for s in ss.spans) == ["a", "b", "c"]
