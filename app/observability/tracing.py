"""OpenTelemetry tracing: on when OTEL_EXPORTER_OTLP_ENDPOINT or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set (read when the app starts, not at import).

Spans go through a BatchSpanProcessor to the OTLP/HTTP exporter: a request only appends its spans
to an in-memory queue (full queue = spans dropped), so a slow or down collector costs requests
nothing. Shutdown flushes for at most SHUTDOWN_TIMEOUT_S and then gives up on what is left.
Service name, resource attributes, sampler, exporter endpoint, headers and per-export timeout come
from the standard OTEL_* variables, which the SDK reads itself.

The provider is not installed globally: each app carries its own, the pipeline holds its tracer,
and outgoing httpx and Redis calls get client spans by instrumenting our client instances (not
the libraries globally) with that provider. Spans are made by app/observability/spans.py (lean
spans on the provider's sampler, ids, resource, limits and processors).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.textmap import default_getter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from app.observability.spans import LeanTracerProvider

log = logging.getLogger("rag.tracing")
PROPAGATOR = TraceContextTextMapPropagator()
DEFAULT_SERVICE_NAME = "rag-gateway"
TRACER_NAME = "rag-gateway"
SHUTDOWN_TIMEOUT_S = 2.0
# what instrumentations check before making a span; set while serving probes and /metrics so
# their Redis/HTTP pings do not show up as root spans
_SUPPRESS_KEY = otel_context._SUPPRESS_INSTRUMENTATION_KEY


# incoming headers are read from the request's headers as a dict of lower-case names to strings
# (the middleware builds it from the ASGI (bytes, bytes) pairs): OpenTelemetry's `default_getter`
# reads exactly that shape
HEADER_GETTER = default_getter


class HashedResource(Resource):
    """A Resource that hashes once. The OTLP encoder groups spans by resource with a dict, so
    it hashes the resource once per span, and Resource.__hash__ JSON-encodes every attribute
    each time (a seventh of the encoder's CPU here); a provider's resource never changes."""

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource.attributes, resource.schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return other is self or super().__eq__(other)


class GatewayTracerProvider(TracerProvider):
    """A TracerProvider whose shutdown returns within a bound even when the collector never
    answers (the SDK's own waits up to 30 s for the export thread)."""

    def __init__(self, resource: Resource, shutdown_timeout_s: float = SHUTDOWN_TIMEOUT_S) -> None:
        # no atexit hook: the app shuts us down, and a second, unbounded attempt at exit would
        # undo the bound
        super().__init__(resource=resource, shutdown_on_exit=False)
        self._shutdown_timeout_s = shutdown_timeout_s

    def shutdown(self) -> None:
        flusher = threading.Thread(
            target=TracerProvider.shutdown, args=(self,), name="otel-shutdown", daemon=True
        )
        flusher.start()
        flusher.join(self._shutdown_timeout_s)
        if flusher.is_alive():
            # the export thread is a daemon: it dies with the process, unsent spans with it
            log.warning(
                "trace export did not finish at shutdown; unsent spans dropped",
                extra={"timeout_s": self._shutdown_timeout_s},
            )


def tracing_enabled(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def setup_tracing(
    env: Mapping[str, str] | None = None,
    exporter: SpanExporter | None = None,
    shutdown_timeout_s: float = SHUTDOWN_TIMEOUT_S,
) -> TracerProvider | None:
    """A TracerProvider exporting OTLP/HTTP, or None when no endpoint is configured."""
    if not tracing_enabled(env):
        return None
    if exporter is None:
        from app.observability.otlp_wire import WireOTLPSpanExporter

        exporter = WireOTLPSpanExporter()
    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; ours is the fallback
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    provider = GatewayTracerProvider(HashedResource(resource), shutdown_timeout_s)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def get_tracer(provider: TracerProvider | None) -> trace.Tracer:
    """The tracer of the gateway's own spans: lean spans (app/observability/spans.py) on the
    provider's sampler, ids, resource and processors."""
    if provider is None:
        return trace.NoOpTracer()
    return LeanTracerProvider(provider).get_tracer(TRACER_NAME)


def instrument_clients(provider: TracerProvider | None, *clients: object) -> None:
    """Client spans (and an outgoing `traceparent`) for the httpx and Redis clients that our
    dependency clients hold in `_client`, on `provider` and on these instances only."""
    if provider is None:
        return
    import httpx
    from redis.asyncio import Redis

    lean = LeanTracerProvider(provider)

    for owner in clients:
        lib = _library_client(getattr(owner, "_client", None))
        if isinstance(lib, httpx.AsyncClient):
            from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

            HTTPXClientInstrumentor.instrument_client(lib, tracer_provider=lean)
        elif isinstance(lib, Redis):
            from opentelemetry.instrumentation.redis import RedisInstrumentor

            RedisInstrumentor.instrument_client(lib, tracer_provider=lean)


def _library_client(lib: object) -> object:
    """qdrant-client's AsyncQdrantClient talks to a server through an httpx client of its own."""
    if type(lib).__name__ == "AsyncQdrantClient":
        try:
            return lib.http.client._async_client  # type: ignore[attr-defined]
        except (AttributeError, NotImplementedError):
            return None  # local mode: no HTTP at all
    return lib


def untraced_context() -> otel_context.Context:
    """The context to serve probes and /metrics in: instrumented clients make no spans there."""
    return otel_context.set_value(_SUPPRESS_KEY, True)


def incoming_trace_id(headers: Mapping[str, str]) -> str:
    """The trace id of an incoming `traceparent`, for log correlation when we do not trace."""
    if "traceparent" not in headers:
        return ""
    ctx = trace.get_current_span(PROPAGATOR.extract(headers, getter=HEADER_GETTER)).get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""
