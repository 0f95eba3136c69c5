"""Lean spans (app/observability/spans.py) against the SDK's: the same random script of span
operations (nested spans, attributes of every kind including invalid ones, limits, events,
exceptions escaping `start_as_current_span`, statuses, renames, links, use after end, remote
and local parents, samplers that record, drop or decide by trace id) is played on an SDK tracer
and on a lean one with the same limits and id sequence; the span processor must see the same
spans (`on_start` and `on_end`), field for field. Times are given explicitly, so they compare
too; an exception's stack trace holds different frames (the SDK's generators), so its first
and last lines are compared."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from obs_support import through_properties
from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider, sampling
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from app.observability import spans
from app.observability.otlp_wire import encode_request
from app.observability.spans import LeanSpan, LeanTracer, LeanTracerProvider
from app.observability.tracing import get_tracer

STACK = "exception.stacktrace"


class Counting(IdGenerator):
    def __init__(self) -> None:
        self._n = itertools.count(1)

    def generate_span_id(self) -> int:
        return next(self._n)

    def generate_trace_id(self) -> int:
        return (next(self._n) * 0x9E3779B97F4A7C15) % 2**128 or 1

    def is_trace_id_random(self) -> bool:
        return True


class Recording(SpanProcessor):
    """What a processor sees: the span as it starts and as it is ending (read as a ReadableSpan,
    as processors do), and what it is handed at the end."""

    def __init__(self) -> None:
        self.started: list[Any] = []
        self.ending: list[Any] = []
        self.ended: list[ReadableSpan] = []

    def on_start(self, span: Any, parent_context: context_api.Context | None = None) -> None:
        self.started.append((span.name, span.context, span.parent, span.kind, dict(span.attributes or {})))

    def _on_ending(self, span: Any) -> None:
        self.ending.append((span.name, span.end_time, dict(span.attributes or {}), span.status.status_code))

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span)


class Odd:
    def __str__(self) -> str:
        return "odd"


class Boom(Exception):
    pass


class Stop(BaseException):  # as a cancellation: not recorded as an error
    pass


class Tagging(sampling.Sampler):
    """Samples every other trace id, with an attribute and a trace state of its own."""

    def should_sample(
        self, parent_context: Any, trace_id: int, *args: Any, **kwargs: Any
    ) -> sampling.SamplingResult:
        if trace_id % 2:
            return sampling.SamplingResult(sampling.Decision.DROP)
        state = TraceState([("s", "1")])
        return sampling.SamplingResult(sampling.Decision.RECORD_AND_SAMPLE, {"sampled.by": "t"}, state)

    def get_description(self) -> str:
        return "tagging"


keys = st.one_of(st.sampled_from(["a", "b", "c", "d", "rag.k", ""]), st.text(max_size=4), st.integers(0, 3))
values = st.one_of(
    st.text(max_size=12),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.none(),
    st.binary(max_size=4),
    st.lists(st.one_of(st.none(), st.text(max_size=4), st.integers(0, 9)), max_size=3),
    st.dictionaries(st.sampled_from(["x", "y", ""]), st.integers(0, 3), max_size=2),
    st.just(Odd()),
)
attrs = st.dictionaries(keys, values, max_size=5)
times = st.integers(1, 2**62)
statuses = st.one_of(
    st.sampled_from([(2, None), ("ERROR", "x")]),  # not a status: ignored
    st.sampled_from(list(StatusCode)).map(lambda c: (c, None)),
    st.tuples(st.sampled_from(list(StatusCode)), st.text(max_size=6)),
    st.sampled_from(list(StatusCode)).map(lambda c: (Status(c), None)),
)
ops = st.recursive(
    st.one_of(
        st.tuples(st.just("attr"), keys, values),
        st.tuples(st.just("attrs"), attrs),
        st.tuples(st.just("event"), st.text(max_size=6), attrs, times),
        st.tuples(st.just("exception"), st.text(max_size=6)),
        st.tuples(st.just("status"), statuses),
        st.tuples(st.just("name"), st.text(max_size=6)),
        st.tuples(st.just("link"), st.integers(0, 3), attrs),
    ),
    lambda children: st.one_of(
        st.tuples(
            st.just("manual"),  # `with tracer.start_span(...) as span:`, not current
            st.text(max_size=6),
            st.lists(children, max_size=3),
            st.booleans(),  # record_exception
            st.booleans(),  # set_status_on_exception
            st.sampled_from([None, "Boom", "Stop"]),
        ),
        st.tuples(st.just("deferred"), st.text(max_size=6), st.lists(children, max_size=3)),
        st.tuples(st.just("decorated"), st.text(max_size=6), st.lists(children, max_size=3)),
        st.tuples(
            st.just("child"),
            st.text(max_size=6),
            st.sampled_from(list(SpanKind)),
            attrs,
            st.lists(children, max_size=5),
            st.sampled_from([None, "Boom", "Stop"]),  # what the child raises: an error, or not one
            st.booleans(),  # end it a second time, then touch it
            times,
        ),
    ),
    max_leaves=14,
)
limits = st.builds(
    SpanLimits,
    max_span_attributes=st.sampled_from([None, 0, 1, 3]),
    max_span_attribute_length=st.sampled_from([None, 0, 2, 5]),
    max_events=st.sampled_from([None, 0, 1, 2]),
    max_event_attributes=st.sampled_from([None, 0, 1]),
    max_links=st.sampled_from([None, 0, 1]),
    max_attribute_length=st.sampled_from([None, 3]),
)
samplers = st.sampled_from(
    [
        sampling.ALWAYS_ON,
        sampling.ALWAYS_OFF,
        sampling.ParentBased(sampling.ALWAYS_ON),
        sampling.DEFAULT_ON,  # the same, as the SDK's default: the lean tracer decides it itself
        sampling.ParentBased(sampling.TraceIdRatioBased(0.5)),
        Tagging(),
    ]
)
parents = st.one_of(
    st.none(),
    st.tuples(st.integers(1, 2**128 - 1), st.integers(1, 2**64 - 1), st.booleans(), st.booleans()),
)


def play(tracer: trace.Tracer, span: trace.Span, script: list[Any]) -> None:
    for op in script:
        if op[0] == "attr":
            span.set_attribute(op[1], op[2])
        elif op[0] == "attrs":
            span.set_attributes(op[1])
        elif op[0] == "event":
            span.add_event(op[1], op[2], op[3])
        elif op[0] == "exception":
            span.record_exception(Boom(op[1]), timestamp=7)
        elif op[0] == "status":
            span.set_status(*op[1])
        elif op[0] == "name":
            span.update_name(op[1])
        elif op[0] == "link":
            span.add_link(SpanContext(op[1], op[1] + 5, True) if op[1] else trace.INVALID_SPAN_CONTEXT, op[2])
        elif op[0] == "manual":
            _, name, body, record, set_status, fails = op
            manual = tracer.start_span(name, record_exception=record, set_status_on_exception=set_status)
            with contextlib.suppress(Boom, Stop), manual as span_:
                play(tracer, span_, body)
                if fails:
                    raise (Boom if fails == "Boom" else Stop)(name)
        elif op[0] == "deferred":  # made here, entered after another span started and ended
            current = tracer.start_as_current_span(op[1])
            tracer.start_span("between").end()
            with current as later:
                play(tracer, later, op[2])
        elif op[0] == "decorated":  # one span per call

            @tracer.start_as_current_span(op[1])
            def call(body: list[Any] = op[2]) -> None:
                play(tracer, trace.get_current_span(), body)

            call()
            call()
        else:
            _, name, kind, start_attrs, body, fails, twice, start = op
            with (
                contextlib.suppress(Boom, Stop),
                tracer.start_as_current_span(
                    name, kind=kind, attributes=start_attrs, start_time=start
                ) as child,
            ):
                play(tracer, child, body)
                if fails:
                    raise (Boom if fails == "Boom" else Stop)(name)
            if twice:
                child.end(start + 1)
                play(tracer, child, body[:2])


def run(
    lean: bool,
    script: list[Any],
    lim: SpanLimits,
    sampler: sampling.Sampler,
    parent: Any,
    version: str | None,
) -> Recording:
    processor = Recording()
    provider = TracerProvider(
        sampler=sampler,
        resource=Resource({"service.name": "t"}),
        id_generator=Counting(),
        span_limits=lim,
        shutdown_on_exit=False,
    )
    provider.add_span_processor(processor)
    # wired as the gateway wires it (app/observability/tracing.py)
    source: trace.TracerProvider = LeanTracerProvider(provider) if lean else provider
    tracer = source.get_tracer("rag-gateway", version)
    ctx = None
    if parent is not None:
        trace_id, span_id, remote, sampled = parent
        flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
        state = TraceState([("k", "v")])
        ctx = trace.set_span_in_context(
            NonRecordingSpan(SpanContext(trace_id, span_id, remote, flags, state))
        )
    root = tracer.start_span("root", context=ctx, kind=SpanKind.SERVER, attributes={"r": 1}, start_time=3)
    token = context_api.attach(trace.set_span_in_context(root))
    try:
        play(tracer, root, script)
    finally:
        context_api.detach(token)
    root.end(10)
    return processor


def fields(s: ReadableSpan) -> dict[str, Any]:
    def events() -> list[Any]:
        out = []
        for e in s.events:
            attributes = dict(e.attributes or {})
            if STACK in attributes:
                # the SDK's trace also holds the frames of its generator context managers: the
                # start and the last line (the exception) must agree, or its cut to the limit
                stack = str(attributes[STACK])
                attributes[STACK] = (stack[:9], stack.rstrip("\n").rsplit("\n", 1)[-1])
            out.append((e.name, e.timestamp, attributes, e.dropped_attributes))
        return out

    return {
        "name": s.name,
        "context": s.context,
        "parent": s.parent,
        "kind": s.kind,
        "attributes": list((s.attributes or {}).items()),
        "dropped_attributes": s.dropped_attributes,
        "events": events(),
        "dropped_events": s.dropped_events,
        "links": [(link.context, dict(link.attributes or {}), link.dropped_attributes) for link in s.links],
        "dropped_links": s.dropped_links,
        "status": (s.status.status_code, s.status.description),
        "times": (s.start_time, s.end_time),
        "scope": s.instrumentation_scope,
        "resource": s.resource.attributes,
    }


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, max_size=6), limits, samplers, parents, st.sampled_from([None, "1"]))
def test_lean_spans_are_the_sdk_spans(
    script: list[Any], lim: SpanLimits, sampler: Any, parent: Any, version: str | None
) -> None:
    # a stopped clock: the times a span takes itself (an end without a time) compare too
    with (
        mock.patch.object(sdk_trace, "time_ns", return_value=42),
        mock.patch.object(spans, "time_ns", return_value=42),
    ):
        sdk = run(False, script, lim, sampler, parent, version)
        lean = run(True, script, lim, sampler, parent, version)
    assert lean.started == sdk.started
    assert lean.ending == sdk.ending
    assert [fields(s) for s in lean.ended] == [fields(s) for s in sdk.ended]
    # the exporter reads a lean span's fields directly (as the SDK's ReadableSpan's, which
    # test_otlp_wire holds to the library's encoding): the same bytes as through its properties
    assert encode_request(lean.ended) == encode_request([through_properties(s) for s in lean.ended])


def test_the_gateway_tracer_makes_lean_spans_on_the_providers_pipeline() -> None:
    processor = Recording()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    tracer = get_tracer(provider)
    assert isinstance(tracer, LeanTracer)
    with tracer.start_as_current_span("embed", attributes={"rag.embedder": "e"}) as span:
        assert isinstance(span, LeanSpan)
        assert trace.get_current_span() is span
    assert trace.get_current_span() is not span
    (done,) = processor.ended
    assert done is span  # the ended span is the ReadableSpan the processors get
    assert (done.name, dict(done.attributes or {})) == ("embed", {"rag.embedder": "e"})
    assert done.instrumentation_scope is not None and done.instrumentation_scope.name == "rag-gateway"


def test_start_as_current_span_decorates_a_coroutine_function_with_one_span_per_call() -> None:
    processor = Recording()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    tracer = get_tracer(provider)
    seen: list[trace.Span] = []

    @tracer.start_as_current_span("job")
    async def job(n: int) -> int:
        seen.append(trace.get_current_span())
        await asyncio.sleep(0)
        return n + 1

    assert asyncio.run(job(1)) == 2
    assert asyncio.run(job(2)) == 3
    assert [s.name for s in processor.ended] == ["job", "job"]
    assert seen[0] is not seen[1] and all(isinstance(s, LeanSpan) for s in seen)
    assert {s.context.span_id for s in processor.ended if s.context} == {
        s.get_span_context().span_id for s in seen
    }
