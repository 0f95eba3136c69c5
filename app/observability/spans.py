"""Lean spans for the gateway's own spans (the server span and the pipeline's stages) and for
the client spans of the httpx and Redis instrumentations.

The SDK's span costs 19-23 µs of CPU to start and end here (its constructor builds a locked
attribute map, two bounded lists and a lock; its end copies it all into a ReadableSpan), and a
traced /rag makes five of them on a request that costs about 1.1 ms. A lean span keeps a plain
dict and is itself the ReadableSpan `on_end` gets (no setter changes an ended span), for 6-8 µs
(README, "Traces"). Everything that decides what is recorded comes from the SDK tracer: the
sampler (so `OTEL_TRACES_SAMPLER` works as documented; the default, ParentBased(ALWAYS_ON), is
decided here as the SDK decides it), the id generator, the resource, the scope, the span limits
and the span processors, which get `on_start`, `_on_ending` and `on_end` with the span (a
ReadableSpan, as the SDK's is). Attribute values and keys are cleaned by the SDK's own
rules; `start_as_current_span` starts the span when entered, records an escaping exception as
`use_span` does, and decorates sync and async functions; `with tracer.start_span(...)` records
what escapes, as the SDK's span does. A span started with links is the SDK's own.

tests/observability/test_spans.py plays random span scripts on the SDK's tracer and on a lean
one and holds what the processors see equal, field for field, and encoded for export byte for
byte.

A lean span is used from one thread (the event loop's); it has no lock.
"""

from __future__ import annotations

import functools
import inspect
import logging
import traceback
from collections.abc import Callable, Mapping, Sequence
from time import time_ns
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, cast

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes, _clean_attribute_value
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, sampling
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.semconv.attributes.exception_attributes import (
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    EXCEPTION_TYPE,
)
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.util import types

log = logging.getLogger("rag.tracing")
_UNSET = Status(StatusCode.UNSET)
_NUMERIC = frozenset({bool, int, float})
_EXCEPTION_ESCAPED = "exception.escaped"
P = ParamSpec("P")
R = TypeVar("R")


class LeanSpan(trace.Span, ReadableSpan):
    """A recording span. It is a ReadableSpan too (as the SDK's span is), so a processor's
    `on_start` and `_on_ending` read its name, attributes, kind and times as usual."""

    __slots__ = ("_dropped", "_record_exception", "_set_status_on_exception", "_tracer")

    def __init__(
        self,
        tracer: LeanTracer,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: types.Attributes,
        start_time: int | None,
        record_exception: bool,
        set_status_on_exception: bool,
    ) -> None:
        self._tracer = tracer
        self._name = name
        self._context = context
        self._parent = parent
        self._kind = kind
        self._resource = tracer.resource
        self._instrumentation_scope = tracer.scope
        self._instrumentation_info = None
        self._attributes: dict[str, types.AnyValue] | BoundedAttributes = {}
        self._dropped = 0
        if attributes:
            self._put(attributes)
        self._events: BoundedList[Event] | tuple[()] = ()
        self._links: BoundedList[Link] | tuple[()] = ()
        self._status = _UNSET
        self._start_time = start_time if start_time is not None else time_ns()
        self._end_time: int | None = None
        self._record_exception = record_exception
        self._set_status_on_exception = set_status_on_exception

    def _put(self, attributes: Mapping[str, Any]) -> None:
        """As the SDK's `set_attributes`: values (and keys) cleaned by its rules, a key set
        again moves to the end, a full map drops its oldest, and what is dropped is counted."""
        max_len = self._tracer.limits.max_span_attribute_length
        for key, value in attributes.items():
            kind = type(value)
            if type(key) is not str or not key or not (kind in _NUMERIC or (kind is str and max_len is None)):
                cleaned = _clean_attribute_value({key: value}, max_len)
                if not cleaned:
                    self._dropped += 1
                    continue
                ((key, value),) = cleaned.items()
            self._store(key, value)

    def _store(self, key: str, value: types.AnyValue) -> None:
        attrs = self._attributes
        assert isinstance(attrs, dict)  # (a BoundedAttributes only once ended)
        max_count = self._tracer.limits.max_span_attributes
        if key in attrs:
            del attrs[key]
        elif max_count is not None and len(attrs) >= max_count:
            self._dropped += 1
            if not attrs:
                return
            log.warning("Attributes dict is full. Dropping the oldest key-value pair.")
            del attrs[next(iter(attrs))]
        attrs[key] = value

    def get_span_context(self) -> SpanContext:
        return cast(SpanContext, self._context)

    def is_recording(self) -> bool:
        return self._end_time is None

    def set_attributes(self, attributes: Mapping[str, types.AttributeValue]) -> None:
        if not self._ended("Setting attribute on ended span."):
            self._put(attributes)

    def set_attribute(self, key: str, value: types.AttributeValue) -> None:
        # as the SDK's single set: an empty or non-string key is dropped (and counted)
        if self._ended("Setting attribute on ended span."):
            return
        if self._tracer.limits.max_span_attributes == 0 or not key or type(key) is not str:
            if not key or type(key) is not str:
                log.warning("invalid key `%s`. must be non-empty string. Dropping key from attributes.", key)
            self._dropped += 1
            return
        kind = type(value)
        if not (kind in _NUMERIC or (kind is str and self._tracer.limits.max_span_attribute_length is None)):
            value = _clean_attribute_value(value, self._tracer.limits.max_span_attribute_length)
        self._store(key, value)

    def _ended(self, warning: str = "Tried calling a method on an ended span.") -> bool:
        if self._end_time is None:
            return False
        log.warning(warning)
        return True

    def add_event(self, name: str, attributes: types.Attributes = None, timestamp: int | None = None) -> None:
        if self._ended():
            return
        limits = self._tracer.limits
        if isinstance(self._events, tuple):
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
        if isinstance(self._links, tuple):
            self._links = BoundedList(limits.max_links)
        attrs = BoundedAttributes(
            limits.max_link_attributes, attributes, immutable=True, max_value_len=limits.max_attribute_length
        )
        self._links.append(Link(context, attrs))

    def update_name(self, name: str) -> None:
        if not self._ended():
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        # as the SDK: OK is final, UNSET is never set, anything else is ignored
        if self._ended() or self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, Status):
            if status.status_code is not StatusCode.UNSET:
                self._status = status
        elif isinstance(status, StatusCode) and status is not StatusCode.UNSET:
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

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """`with tracer.start_span(...) as span:`, as the SDK's span: whatever escapes is recorded."""
        if exc is not None and self.is_recording():
            if self._record_exception:
                self.record_exception(exc, escaped=True)
            if self._set_status_on_exception:
                self.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        self.end()

    def end(self, end_time: int | None = None) -> None:
        if self._ended("Calling end() on an ended span."):
            return
        self._end_time = end_time if end_time is not None else time_ns()
        if self._dropped:  # the count the exporter reports goes with a BoundedAttributes
            attributes = BoundedAttributes(
                self._tracer.limits.max_span_attributes, self._attributes, immutable=True
            )
            attributes.dropped = self._dropped
            self._attributes = attributes
        processor = self._tracer.processor
        processor._on_ending(cast(sdk_trace.Span, self))
        # the span itself, as the ReadableSpan it is: nothing changes an ended span (every setter
        # refuses), so the SDK's copy of its fields would be the same span again
        processor.on_end(self)


class LeanTracerProvider(trace.TracerProvider):
    """Hands out `LeanTracer`s over an SDK provider: for our own spans and for the client
    instrumentations (httpx, Redis), which take a provider."""

    def __init__(self, sdk: sdk_trace.TracerProvider) -> None:
        self.sdk = sdk

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: types.Attributes | None = None,
    ) -> trace.Tracer:
        name, version = instrumenting_module_name, instrumenting_library_version
        tracer = self.sdk.get_tracer(name, version, schema_url, attributes)
        if not isinstance(tracer, sdk_trace.Tracer):  # a shut down provider's no-op
            return tracer
        # what the SDK tracer holds, should it not hold it where LeanTracer looks
        scope = InstrumentationScope(name, version or "", schema_url, attributes)
        return LeanTracer(tracer, scope)


class LeanTracer(trace.Tracer):
    """A tracer making `LeanSpan`s with the sampler, ids, resource, limits, scope and processors
    of the SDK's tracer `sdk`."""

    def __init__(self, sdk: sdk_trace.Tracer, scope: InstrumentationScope) -> None:
        self.sdk = sdk
        self.sampler = sdk.sampler
        self.ids = sdk.id_generator
        self.resource = sdk.resource
        self.processor = sdk.span_processor
        # the SDK tracer's own (it has no public accessor for them)
        own_scope = getattr(sdk, "_instrumentation_scope", None)
        limits = getattr(sdk, "_span_limits", None)
        self.scope = own_scope if isinstance(own_scope, InstrumentationScope) else scope
        self.limits = limits if isinstance(limits, SpanLimits) else SpanLimits()

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
        trace_state: TraceState | None
        if self.sampler is sampling.DEFAULT_ON:
            # the SDK's default sampler, ParentBased(ALWAYS_ON), decided as it decides it, without
            # its calls and a SamplingResult per span: a root span or the child of a sampled
            # parent is recorded and sampled with its attributes, any other child is dropped;
            # the trace state is the parent's
            is_sampled = recording = parent is None or parent.trace_flags.sampled
            trace_state = None if parent is None else parent.trace_state
            sampled_attributes = attributes
        else:
            sampled = self.sampler.should_sample(context, trace_id, name, kind, attributes, links)
            is_sampled = sampled.decision.is_sampled()  # type: ignore[no-untyped-call]
            recording = sampled.decision.is_recording()  # type: ignore[no-untyped-call]
            trace_state, sampled_attributes = sampled.trace_state, sampled.attributes
        flags = TraceFlags.SAMPLED if is_sampled else TraceFlags.DEFAULT
        if random_id:
            flags |= TraceFlags.RANDOM_TRACE_ID
        span_context = SpanContext(
            trace_id,
            self.ids.generate_span_id(),
            is_remote=False,
            trace_flags=TraceFlags(flags),
            trace_state=trace_state,
        )
        if not recording:
            return trace.NonRecordingSpan(span_context)
        span = LeanSpan(
            self,
            name,
            span_context,
            parent,
            kind,
            sampled_attributes,
            start_time,
            record_exception,
            set_status_on_exception,
        )
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
        def start() -> trace.Span:
            return self.start_span(
                name, context, kind, attributes, links, start_time, record_exception, set_status_on_exception
            )

        return _CurrentSpan(start, end_on_exit, record_exception, set_status_on_exception)


class _CurrentSpan:
    """`use_span` over a span started on entering (as the SDK's, which starts it in its
    generator), as a class: no generator to make and step through for each span. Like the
    SDK's, it also decorates a function (sync or async): one span per call."""

    __slots__ = ("end_on_exit", "record_exception", "set_status_on_exception", "span", "start", "token")

    def __init__(
        self, start: Callable[[], trace.Span], end_on_exit: bool, record_exception: bool, set_status: bool
    ) -> None:
        self.start = start
        self.end_on_exit = end_on_exit
        self.record_exception = record_exception
        self.set_status_on_exception = set_status
        self.span: trace.Span = trace.INVALID_SPAN
        self.token: object = None

    def _again(self) -> _CurrentSpan:
        return _CurrentSpan(self.start, self.end_on_exit, self.record_exception, self.set_status_on_exception)

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                with self._again():
                    return await func(*args, **kwargs)

            return cast(Callable[P, R], run_async)

        @functools.wraps(func)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            with self._again():
                return func(*args, **kwargs)

        return run

    def __enter__(self) -> trace.Span:
        self.span = self.start()
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
