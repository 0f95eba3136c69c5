"""Lean spans for the gateway's own spans (the server span and the pipeline's stages).

The SDK's span costs about 20 µs of CPU to start and end here (measured: its constructor builds
a locked attribute map, two bounded lists and a lock; its end copies it all into a ReadableSpan),
and a traced /rag makes five of them on a request that costs about 1.1 ms. `LeanTracer` makes the
same spans with a plain dict and one ReadableSpan at the end, for about a third of that (README,
"Traces"). It takes everything that decides what is recorded from the provider's own SDK
tracer: the sampler (so `OTEL_TRACES_SAMPLER` works as documented), the id generator, the
resource and the span processors, which get `on_start`, `_on_ending` and `on_end` as from an SDK
span. Span limits (`OTEL_SPAN_*`, `OTEL_ATTRIBUTE_*`) apply as in the SDK, attribute values are
cleaned by the SDK's own rules, and `start_as_current_span` records an escaping exception and
sets the error status as `use_span` does. A span started with links is the SDK's own.

tests/observability/test_spans.py checks, over many random span trees, that the exporter gets
exactly what the SDK's spans would have given it (ids and times aside).

A lean span is used from one thread (the event loop's); it has no lock.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping, Sequence
from time import time_ns
from types import TracebackType
from typing import Any, cast

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes, _clean_attribute_value
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.semconv.attributes.exception_attributes import (
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    EXCEPTION_TYPE,
)
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util import types

log = logging.getLogger("rag.tracing")
_UNSET = Status(StatusCode.UNSET)
_NUMERIC = frozenset({bool, int, float})
_EXCEPTION_ESCAPED = "exception.escaped"


class LeanSpan(trace.Span):
    __slots__ = (
        "_attributes",
        "_context",
        "_dropped",
        "_end",
        "_events",
        "_kind",
        "_links",
        "_name",
        "_parent",
        "_start",
        "_status",
        "_tracer",
    )

    def __init__(
        self,
        tracer: LeanTracer,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: types.Attributes,
        start_time: int | None,
    ) -> None:
        self._tracer = tracer
        self._name = name
        self._context = context
        self._parent = parent
        self._kind = kind
        self._attributes: dict[str, types.AnyValue] = {}
        self._dropped = 0
        if attributes:
            self._put(attributes)
        self._events: BoundedList[Event] | tuple[()] = ()
        self._links: BoundedList[Link] | tuple[()] = ()
        self._status = _UNSET
        self._start = start_time if start_time is not None else time_ns()
        self._end: int | None = None

    def _put(self, attributes: Mapping[str, Any]) -> None:
        """As the SDK's BoundedAttributes: values cleaned by its rules (invalid ones dropped,
        long strings cut), a key set again moves to the end, and a full map drops its oldest."""
        limits = self._tracer.limits
        max_len = limits.max_span_attribute_length
        max_count = limits.max_span_attributes
        attrs = self._attributes
        for key, value in attributes.items():
            kind = type(value)
            if type(key) is not str or not key or not (kind in _NUMERIC or (kind is str and max_len is None)):
                cleaned = _clean_attribute_value({key: value}, max_len)
                if not cleaned:
                    self._dropped += 1
                    continue
                ((key, value),) = cleaned.items()
            if key in attrs:
                del attrs[key]
            elif max_count is not None and len(attrs) >= max_count:
                self._dropped += 1
                if not attrs:
                    continue
                log.warning("Attributes dict is full. Dropping the oldest key-value pair.")
                del attrs[next(iter(attrs))]
            attrs[key] = value

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end is None

    def set_attributes(self, attributes: Mapping[str, types.AttributeValue]) -> None:
        if self._ended("Setting attribute on ended span."):
            return
        self._put(attributes)

    def set_attribute(self, key: str, value: types.AttributeValue) -> None:
        if self._ended("Setting attribute on ended span."):
            return
        self._put({key: value})

    def _ended(self, warning: str = "Tried calling a method on an ended span.") -> bool:
        if self._end is None:
            return False
        log.warning(warning)
        return True

    def add_event(self, name: str, attributes: types.Attributes = None, timestamp: int | None = None) -> None:
        if self._ended():
            return
        limits = self._tracer.limits
        if not self._events:
            self._events = BoundedList(limits.max_events)
        attrs = BoundedAttributes(
            limits.max_event_attributes, attributes, immutable=True, max_value_len=limits.max_attribute_length
        )
        self._events.append(Event(name, attrs, timestamp))

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        # the SDK's test of a link worth keeping
        if not (context and (context.is_valid or attributes or context.trace_state)) or self._ended():
            return
        limits = self._tracer.limits
        if not self._links:
            self._links = BoundedList(limits.max_links)
        attrs = BoundedAttributes(
            limits.max_link_attributes, attributes, immutable=True, max_value_len=limits.max_attribute_length
        )
        self._links.append(Link(context, attrs))

    def update_name(self, name: str) -> None:
        if not self._ended():
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        # as the SDK: OK is final, UNSET is never set
        if self._ended() or self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, Status):
            if status.status_code is not StatusCode.UNSET:
                self._status = status
        elif status is not StatusCode.UNSET:
            self._status = Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        module = type(exception).__module__
        qualname = type(exception).__qualname__
        attrs: dict[str, Any] = {
            EXCEPTION_TYPE: f"{module}.{qualname}" if module and module != "builtins" else qualname,
            EXCEPTION_MESSAGE: str(exception),
            EXCEPTION_STACKTRACE: "".join(traceback.format_exception(exception)),
            _EXCEPTION_ESCAPED: str(escaped),
        }
        if attributes:
            attrs.update(attributes)
        self.add_event("exception", attrs, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._ended("Calling end() on an ended span."):
            return
        self._end = end_time if end_time is not None else time_ns()
        tracer = self._tracer
        limits = tracer.limits
        attributes: types.Attributes = self._attributes
        if self._dropped:  # the count the exporter reports goes with a BoundedAttributes
            attributes = BoundedAttributes(limits.max_span_attributes, self._attributes, immutable=True)
            attributes.dropped = self._dropped
        processor = tracer.processor
        processor._on_ending(cast(sdk_trace.Span, self))
        processor.on_end(
            ReadableSpan(
                name=self._name,
                context=self._context,
                parent=self._parent,
                resource=tracer.resource,
                attributes=attributes,
                events=self._events,
                links=self._links,
                kind=self._kind,
                status=self._status,
                start_time=self._start,
                end_time=self._end,
                instrumentation_scope=tracer.scope,
            )
        )


class LeanTracerProvider(trace.TracerProvider):
    """Hands out `LeanTracer`s over an SDK provider: for our own spans and for the client
    instrumentations (httpx, Redis), which take a provider."""

    def __init__(self, sdk: sdk_trace.TracerProvider, limits: SpanLimits | None = None) -> None:
        self.sdk = sdk
        # the provider's, which it read from the same OTEL_* variables unless it was given others
        self.limits = limits or SpanLimits()

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: types.Attributes | None = None,
    ) -> trace.Tracer:
        tracer = self.sdk.get_tracer(
            instrumenting_module_name, instrumenting_library_version, schema_url, attributes
        )
        if not isinstance(tracer, sdk_trace.Tracer):  # a shut down provider's no-op
            return tracer
        scope = InstrumentationScope(
            instrumenting_module_name, instrumenting_library_version, schema_url, attributes
        )
        return LeanTracer(tracer, scope, self.limits)


class LeanTracer(trace.Tracer):
    """A tracer making `LeanSpan`s with the sampler, ids, resource and processors of `sdk`."""

    def __init__(self, sdk: sdk_trace.Tracer, scope: InstrumentationScope, limits: SpanLimits) -> None:
        self.sdk = sdk
        self.sampler = sdk.sampler
        self.ids = sdk.id_generator
        self.resource = sdk.resource
        self.processor = sdk.span_processor
        self.scope = scope
        self.limits = limits

    def start_span(
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        if links:
            return self.sdk.start_span(
                name, context, kind, attributes, links, start_time, record_exception, set_status_on_exception
            )
        parent: SpanContext | None = trace.get_current_span(context).get_span_context()
        if parent is None or not parent.is_valid:
            parent = None
            trace_id = self.ids.generate_trace_id()
            random_id = self.ids.is_trace_id_random()
        else:
            trace_id = parent.trace_id
            random_id = parent.trace_flags.random_trace_id
        sampled = self.sampler.should_sample(context, trace_id, name, kind, attributes, links)
        is_sampled: bool = sampled.decision.is_sampled()  # type: ignore[no-untyped-call]
        flags = TraceFlags.SAMPLED if is_sampled else TraceFlags.DEFAULT
        if random_id:
            flags |= TraceFlags.RANDOM_TRACE_ID
        span_context = SpanContext(
            trace_id,
            self.ids.generate_span_id(),
            is_remote=False,
            trace_flags=TraceFlags(flags),
            trace_state=sampled.trace_state,
        )
        if not sampled.decision.is_recording():  # type: ignore[no-untyped-call]
            return trace.NonRecordingSpan(span_context)
        span = LeanSpan(self, name, span_context, parent, kind, sampled.attributes, start_time)
        self.processor.on_start(cast(sdk_trace.Span, span), parent_context=context)
        return span

    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> _CurrentSpan:
        span = self.start_span(name, context, kind, attributes, links, start_time)
        return _CurrentSpan(span, end_on_exit, record_exception, set_status_on_exception)


class _CurrentSpan:
    """`use_span` as a class: no generator to make and step through for each span."""

    __slots__ = ("end_on_exit", "record_exception", "set_status_on_exception", "span", "token")

    def __init__(self, span: trace.Span, end_on_exit: bool, record_exception: bool, set_status: bool) -> None:
        self.span = span
        self.end_on_exit = end_on_exit
        self.record_exception = record_exception
        self.set_status_on_exception = set_status
        self.token: object = None

    def __enter__(self) -> trace.Span:
        self.token = context_api.attach(trace.set_span_in_context(self.span))
        return self.span

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        span = self.span
        try:
            context_api.detach(self.token)  # type: ignore[arg-type]
            # as use_span: only Exception (not GeneratorExit, not cancellation) is an error
            if isinstance(exc, Exception) and span.is_recording():
                if self.record_exception:
                    span.record_exception(exc)
                if self.set_status_on_exception:
                    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        finally:
            if self.end_on_exit:
                span.end()
