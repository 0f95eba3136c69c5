"""The gateway's own OTLP span encoding (app/observability/otlp_wire.py) against the library's:
for random batches of real SDK spans (every attribute type, bytes, None inside sequences,
out-of-range integers, statuses, remote and local parents, trace state, events, links,
attribute limits, two resources and several scopes), the official protobuf classes parse our
bytes to exactly the message the OTLP exporter's own encoder builds. The exporter itself is checked end to end against a real
receiver in test_tracing.py."""

from __future__ import annotations

import http.server
import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from obs_support import through_properties
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from app.observability.otlp_wire import WireOTLPSpanExporter, encode_request

keys = st.text(min_size=1, max_size=12)
scalars = st.one_of(
    st.text(max_size=20),
    st.booleans(),
    st.integers(-(2**70), 2**70),  # beyond int64: the attribute is left out by both
    st.floats(allow_nan=False),
    st.binary(max_size=8),
)
values = st.one_of(
    scalars,
    st.lists(st.one_of(st.none(), st.text(max_size=5)), max_size=4),
    st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4),
    st.lists(st.floats(allow_nan=False), max_size=4),
    st.lists(st.booleans(), max_size=4),
)
attributes = st.dictionaries(keys, values, max_size=6)
ids = st.integers(1, 2**64 - 1)
trace_ids = st.integers(1, 2**128 - 1)
parents = st.one_of(
    st.none(),
    st.tuples(
        trace_ids,
        ids,
        st.booleans(),
        st.lists(
            st.tuples(st.sampled_from("abc"), st.sampled_from("xyz")), max_size=2, unique_by=lambda kv: kv[0]
        ),
    ),
)
statuses = st.one_of(
    st.none(),
    st.tuples(st.sampled_from([StatusCode.OK, StatusCode.ERROR]), st.one_of(st.none(), st.text(max_size=10))),
)
span_specs = st.fixed_dictionaries(
    {
        "name": st.text(max_size=16),
        "kind": st.sampled_from(list(SpanKind)),
        "attributes": attributes,
        "parent": parents,
        "status": statuses,
        "events": st.lists(st.tuples(st.text(max_size=8), attributes), max_size=2),
        "links": st.lists(st.tuples(trace_ids, ids, st.booleans(), attributes), max_size=2),
        "provider": st.integers(0, 1),
        "scope": st.integers(0, 2),
    }
)


def _providers(exporter: InMemorySpanExporter) -> list[TracerProvider]:
    out = []
    for i, limits in enumerate([SpanLimits(), SpanLimits(max_span_attributes=3, max_events=1, max_links=1)]):
        resource = Resource(
            {"service.name": f"svc-{i}", "n": i, "tags": ["a", "b"]}, schema_url="" if i else "https://x/1"
        )
        p = TracerProvider(resource=resource, span_limits=limits)
        p.add_span_processor(SimpleSpanProcessor(exporter))
        out.append(p)
    return out


def _scope(p: TracerProvider, n: int) -> trace.Tracer:
    if n == 0:
        return p.get_tracer("rag-gateway")
    if n == 1:
        return p.get_tracer("lib", "1.2.3", schema_url="https://s/2")
    return p.get_tracer("lib", "1.2.3", attributes={"scope.attr": 7})


def _make(tracer: trace.Tracer, spec: dict[str, Any]) -> None:
    ctx = None
    if spec["parent"] is not None:
        tid, sid, remote, state = spec["parent"]
        parent = SpanContext(
            tid, sid, is_remote=remote, trace_flags=TraceFlags(1), trace_state=TraceState(state)
        )
        ctx = trace.set_span_in_context(NonRecordingSpan(parent))
    links = [Link(SpanContext(t, s, is_remote=r), a) for t, s, r, a in spec["links"]]
    span = tracer.start_span(
        spec["name"], context=ctx, kind=spec["kind"], attributes=spec["attributes"], links=links
    )
    for name, attrs in spec["events"]:
        span.add_event(name, attrs)
    if spec["status"] is not None:
        code, desc = spec["status"]
        span.set_status(Status(code, desc if code is StatusCode.ERROR else None))
    span.end()


def encoded_both_ways(make: Callable[[], None], exporter: InMemorySpanExporter) -> tuple[Any, Any]:
    """Run `make`, then encode the spans it finished ours and the library's way: our bytes parsed
    back, and the library's message. Our bytes are the same whichever way the encoder reads a
    span. Logging is off meanwhile: the SDK and both encoders log each attribute they leave out."""
    logging.disable(logging.CRITICAL)
    try:
        make()
        spans = exporter.get_finished_spans()
        ours = encode_request(spans)
        assert all(type(s) is ReadableSpan for s in spans)
        assert encode_request([through_properties(s) for s in spans]) == ours
        return ExportTraceServiceRequest.FromString(ours), encode_spans(spans)
    finally:
        logging.disable(logging.NOTSET)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=st.lists(span_specs, max_size=8))
def test_our_bytes_parse_to_the_librarys_message(specs: list[dict[str, Any]]) -> None:
    exporter = InMemorySpanExporter()
    providers = _providers(exporter)

    def make() -> None:
        for spec in specs:
            _make(_scope(providers[spec["provider"]], spec["scope"]), spec)

    ours, theirs = encoded_both_ways(make, exporter)
    assert ours == theirs, (ours, theirs)
    assert len(exporter.get_finished_spans()) == len(specs)


# few keys and values that are equal but encode differently (True == 1 == 1.0, 0.0 == -0.0),
# long strings and an int beyond int64: the encoder's cache of repeated attributes must never
# hand one of them another's bytes, whatever the order they come in
repeating = st.dictionaries(
    st.sampled_from("ab"),
    st.sampled_from(
        [True, False, 1, 0, 1.0, 0.0, -0.0, "1", "", "x" * 300, "x" * 299 + "y", 2**63 - 1, 2**64]
    ),
    max_size=2,
)


@settings(max_examples=300, deadline=None)
@given(sets=st.lists(repeating, min_size=1, max_size=10))
def test_repeated_attributes_encode_as_the_library_does(sets: list[dict[str, Any]]) -> None:
    exporter = InMemorySpanExporter()
    (p, _) = _providers(exporter)
    tracer = p.get_tracer("t")

    def make() -> None:
        for attrs in sets:
            link = Link(SpanContext(1, 2, is_remote=False), attrs)
            span = tracer.start_span("s", attributes=attrs, links=[link])
            span.add_event("e", attrs)  # the same attributes under the event's and the link's tags
            span.end()

    ours, theirs = encoded_both_ways(make, exporter)
    assert ours == theirs, (ours, theirs)


def test_an_unencodable_attribute_is_left_out_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    exporter = InMemorySpanExporter()
    (p, _) = _providers(exporter)
    span = p.get_tracer("t").start_span("s", attributes={"ok": 1, "huge": 2**64})
    span.end()
    message = ExportTraceServiceRequest.FromString(encode_request(exporter.get_finished_spans()))
    (encoded,) = message.resource_spans[0].scope_spans[0].spans
    assert [kv.key for kv in encoded.attributes] == ["ok"]
    assert any(getattr(r, "key", None) == "huge" for r in caplog.records)


def test_an_attribute_that_fails_to_encode_costs_only_itself() -> None:
    """The SDK takes nested mappings as attribute values; one nested 400 deep fails to encode in
    both encoders (the recursion limit in ours), and both leave out that attribute, not the
    batch."""
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(400):
        node["x"] = {}
        node = node["x"]
    exporter = InMemorySpanExporter()
    (p, _) = _providers(exporter)
    tracer = p.get_tracer("t")
    tracer.start_span("a", attributes={"deep": deep, "ok": 1}).end()
    tracer.start_span("b").end()
    spans = exporter.get_finished_spans()
    logging.disable(logging.CRITICAL)
    try:
        ours = ExportTraceServiceRequest.FromString(encode_request(spans))
        theirs = encode_spans(spans)
    finally:
        logging.disable(logging.NOTSET)
    assert ours == theirs
    encoded = ours.resource_spans[0].scope_spans[0].spans
    assert [s.name for s in encoded] == ["a", "b"]
    assert [kv.key for kv in encoded[0].attributes] == ["ok"]


@pytest.mark.parametrize("status", [200, 400])
def test_export_reports_what_the_librarys_exporter_reports(
    status: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our exporter against the library's, each sending the same spans to a receiver answering
    `status`: the same result, the same body, and the same attributes on the exporter's own
    duration metric (the HTTP status of a failed export included)."""
    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    bodies: list[bytes] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    spans_out = InMemorySpanExporter()
    (p, _) = _providers(spans_out)
    with p.get_tracer("t").start_as_current_span("s", attributes={"k": "v"}):
        pass
    spans = spans_out.get_finished_spans()

    def run(cls: type[OTLPSpanExporter]) -> tuple[SpanExportResult, dict[str, Any]]:
        reader = InMemoryMetricReader()
        exporter = cls(endpoint=url, meter_provider=MeterProvider(metric_readers=[reader]))
        logging.disable(logging.CRITICAL)
        try:
            result = exporter.export(spans)
        finally:
            logging.disable(logging.NOTSET)
            exporter.shutdown()
        data = reader.get_metrics_data()
        assert data is not None
        attrs = {  # the component's name counts exporter instances: it differs by design
            m.name: {k: v for k, v in (dp.attributes or {}).items() if k != "otel.component.name"}
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
            if "duration" in m.name
            for dp in m.data.data_points  # type: ignore[union-attr]
        }
        return result, attrs

    try:
        theirs, ours = run(OTLPSpanExporter), run(WireOTLPSpanExporter)
    finally:
        server.shutdown()
        server.server_close()
    assert ours == theirs
    assert theirs[1], "the library reported no export duration"
    expected = SpanExportResult.SUCCESS if status == 200 else SpanExportResult.FAILURE
    assert theirs[0] is expected
    assert len(bodies) == 2
    assert ExportTraceServiceRequest.FromString(bodies[1]) == ExportTraceServiceRequest.FromString(bodies[0])
