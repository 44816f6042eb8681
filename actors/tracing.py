"""Traces (OpenTelemetry): a span per gRPC call at the gateway (the gRPC instrumentation,
which also continues a client's `traceparent`), a span per batch on every hop after it,
and the trace carried across the Ray calls in the batch messages (`trace`: a W3C
traceparent). A batch serves many calls, so it is not any one call's child: its span links
to the spans of the calls it carries (the gateway's batch, the journal's commit), and the
hops it makes are its children (order shard, stock shard).

Off by default (`trace_exporter = "none"`): then every function here costs a flag check.
`trace_exporter` names where spans go in every engine process: "otlp" (an OpenTelemetry
collector at `trace_endpoint`, needs the `otlp` extra), "console" (one JSON object a line
on the process's stdout) or "memory" (the last `trace_spans_max` spans of each process,
read with its actor's `spans()`: tests and debugging).
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from flashtx.engine.config import Config

_enabled = False
_tracer: trace.Tracer = trace.NoOpTracer()
_provider: TracerProvider | None = None
_memory: _MemoryExporter | None = None
_propagator = TraceContextTextMapPropagator()


class _MemoryExporter(SpanExporter):
    """The last `spans_max` finished spans (bounded, unlike the SDK's in-memory one)."""

    def __init__(self, spans_max: int) -> None:
        self._spans: collections.deque[ReadableSpan] = collections.deque(maxlen=spans_max)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            self._spans.extend(spans)
        return SpanExportResult.SUCCESS

    def spans(self) -> list[ReadableSpan]:
        with self._lock:
            return list(self._spans)


def configure(config: Config, process: str) -> None:
    """Sets this process's tracing up from the configuration (once; later calls keep it)."""
    global _enabled, _tracer, _provider, _memory
    if _provider is not None or config.trace_exporter == "none":
        return
    provider = TracerProvider(
        resource=Resource.create({"service.name": "flashtx", "flashtx.process": process}),
        sampler=ParentBased(TraceIdRatioBased(config.trace_sample_ratio)))
    if config.trace_exporter == "memory":
        _memory = _MemoryExporter(config.trace_spans_max)
        provider.add_span_processor(SimpleSpanProcessor(_memory))
    elif config.trace_exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(
            formatter=lambda span: span.to_json(indent=None) + "\n")))
    else:  # otlp: checked by Config (the extra is installed)
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        provider.add_span_processor(BatchSpanProcessor(
            OTLPSpanExporter(endpoint=config.trace_endpoint or None)))
    _provider = provider
    _tracer = provider.get_tracer("flashtx")
    _enabled = True


def enabled() -> bool:
    return _enabled


def provider() -> TracerProvider | None:
    return _provider


def link() -> trace.SpanContext | None:
    """The current span's context, to link a batch's span to (None when not tracing)."""
    if not _enabled:
        return None
    context = trace.get_current_span().get_span_context()
    return context if context.is_valid else None


def carrier() -> str:
    """The current span as a W3C traceparent, for a message to carry ("" when none)."""
    if not _enabled:
        return ""
    headers: dict[str, str] = {}
    _propagator.inject(headers)
    return headers.get("traceparent", "")


@contextlib.contextmanager
def span(name: str, parent: str = "", links: Sequence[trace.SpanContext | None] = (),
         **attributes: Any) -> Iterator[None]:
    """A span around a batch's work on this hop: the child of `parent` (a traceparent a
    message carried) and linked to `links`. Nothing when not tracing."""
    if not _enabled:
        yield
        return
    context = (_propagator.extract({"traceparent": parent}) if parent
               else otel_context.Context())
    with _tracer.start_as_current_span(
            name, context=context, attributes=attributes,
            links=[trace.Link(c) for c in links if c is not None]):
        yield


def finished_spans() -> list[dict[str, Any]]:
    """The spans this process kept ("memory" exporter), oldest first, as plain data."""
    if _memory is None:
        return []
    return [{"name": s.name, "trace_id": f"{s.context.trace_id:032x}",
             "span_id": f"{s.context.span_id:016x}",
             "parent_id": f"{s.parent.span_id:016x}" if s.parent else "",
             "links": [(f"{ln.context.trace_id:032x}", f"{ln.context.span_id:016x}")
                       for ln in s.links],
             "attributes": dict(s.attributes or {})} for s in _memory.spans()]
