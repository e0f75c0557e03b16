"""OpenTelemetry tracing for the services, configured only by the standard ``OTEL_*`` variables.

Tracing is OFF unless the environment asks for it: ``OTEL_TRACES_EXPORTER`` is ``otlp`` or
``console``, or ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set,
and ``OTEL_SDK_DISABLED`` is not ``true``. Off, every helper here is a cheap no-op: the global
tracer provider stays the API's no-op one, ``inject_headers`` hands the headers back untouched
and ``extract_context`` returns an empty context.

On, spans go through a ``BatchSpanProcessor`` (tuned by ``OTEL_BSP_*``) to the OTLP gRPC
exporter (``OTEL_EXPORTER_OTLP_*``), or to stdout with ``OTEL_TRACES_EXPORTER=console``. The
sampler is the SDK's, from ``OTEL_TRACES_SAMPLER`` (default ``parentbased_always_on``); use
``parentbased_traceidratio`` with ``OTEL_TRACES_SAMPLER_ARG`` to trace a fraction of events, so
that an unsampled event costs its services only a context copy.

The W3C trace context (``traceparent``, ``tracestate``, and baggage; ``OTEL_PROPAGATORS`` picks)
travels in Kafka record headers: producers call ``inject_headers`` and consumers
``extract_context``.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager as ContextManager
from typing import Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.confluent_kafka.utils import (
    KafkaContextGetter,
    KafkaContextSetter,
)
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler
from opentelemetry.trace import Link, Span

from mpp import w3c

__all__ = [
    "Link",
    "Span",
    "configure_tracing",
    "enabled",
    "extract_context",
    "get_tracer",
    "inject_headers",
    "links_to",
    "produce_span",
    "record_context",
    "record_span",
    "shutdown_tracing",
    "start_record_span",
    "store_span",
    "tracing_requested",
    "use_span",
]

KafkaHeaders = Sequence[tuple[str, bytes | None]]

_lock = threading.Lock()
_provider: TracerProvider | None = None
# Set with the provider: whether the W3C headers may take mpp.w3c's short path, and whether the
# sampler drops every child of an unsampled remote parent (then such a record gets no span).
_short_path = False
_drop_unsampled = False
_getter = KafkaContextGetter()
_setter = KafkaContextSetter()
_EMPTY = otel_context.Context()
# What the helpers below hand out while tracing is off: nothing is allocated per record.
_OFF: ContextManager[trace.Span] = contextlib.nullcontext(trace.INVALID_SPAN)
_OFF_NONE: ContextManager[None] = contextlib.nullcontext()


class KafkaRecord(Protocol):
    """What the span helpers read of a consumed record (a ``confluent_kafka.Message``)."""

    def topic(self) -> str | None: ...

    def partition(self) -> int | None: ...

    def offset(self) -> int | None: ...

    # A consumed record's headers: a list of (str, bytes) pairs, or None.
    def headers(self) -> Any: ...


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def _exporter_names() -> list[str]:
    return [n.strip().lower() for n in _env("OTEL_TRACES_EXPORTER").split(",") if n.strip()]


def tracing_requested() -> bool:
    """Whether the ``OTEL_*`` environment turns tracing on (see the module docstring)."""
    if _env("OTEL_SDK_DISABLED").lower() == "true":
        return False
    names = _exporter_names()
    if "none" in names:
        return False
    if any(n in ("otlp", "console") for n in names):
        return True
    return bool(_env("OTEL_EXPORTER_OTLP_ENDPOINT") or _env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def enabled() -> bool:
    """Whether ``configure_tracing`` installed a tracer provider in this process."""
    return _provider is not None


def _exporters() -> list[SpanExporter]:
    names = _exporter_names() or ["otlp"]
    exporters: list[SpanExporter] = []
    if "otlp" in names:
        # Imported here: grpc and the protobuf stubs are not loaded when tracing is off.
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporters.append(OTLPSpanExporter())
    if "console" in names:
        exporters.append(ConsoleSpanExporter())
    return exporters


def _resource(service: str) -> Resource:
    attributes: dict[str, str] = {}
    named_by_env = _env("OTEL_SERVICE_NAME") or "service.name=" in _env("OTEL_RESOURCE_ATTRIBUTES")
    if not named_by_env:
        attributes[SERVICE_NAME] = service
    return Resource.create(attributes)


def configure_tracing(
    service: str, *, span_processors: Iterable[SpanProcessor] | None = None
) -> bool:
    """Install the process's tracer provider if the environment asks for tracing.

    Returns whether tracing is on. Idempotent: a second call keeps the first provider and
    returns True again. ``service`` becomes ``service.name`` unless ``OTEL_SERVICE_NAME`` (or
    ``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES``) names it. ``span_processors`` replaces
    the exporters the environment names (tests pass an in-memory one); it does not turn
    tracing on by itself.
    """
    global _provider, _short_path, _drop_unsampled
    with _lock:
        if _provider is not None:
            return True
        if not tracing_requested():
            return False
        provider = TracerProvider(resource=_resource(service))
        if span_processors is None:
            for exporter in _exporters():
                provider.add_span_processor(BatchSpanProcessor(exporter))
        else:
            for processor in span_processors:
                provider.add_span_processor(processor)
        trace.set_tracer_provider(provider)
        _short_path = w3c.short_path_allowed()
        _drop_unsampled = drops_unsampled_children(provider.sampler)
        _provider = provider
        return True


def drops_unsampled_children(sampler: Sampler) -> bool:
    """Whether ``sampler`` drops every span whose remote parent is not sampled (the
    ``parentbased_*`` samplers, unless built otherwise): a record whose producer's span was
    not sampled then needs no span of its own, only its producer's context passed on."""
    if not isinstance(sampler, ParentBased):
        return False
    parent = trace.NonRecordingSpan(trace.SpanContext(1, 1, is_remote=True))
    outcome = sampler.should_sample(trace.set_span_in_context(parent), 1, "probe")
    return outcome.decision is Decision.DROP


def get_tracer(name: str) -> trace.Tracer:
    """A tracer from the global provider (a no-op one while tracing is off)."""
    return trace.get_tracer(name)


def inject_headers(headers: KafkaHeaders | None) -> list[tuple[str, bytes]]:
    """Return ``headers`` plus the current context's W3C headers (``traceparent``...).

    Any trace headers already present are replaced, so a record re-produced under a new span
    (a service's output, a dead letter) carries that span's context, not its input's. Off, or
    with no current span, the headers come back unchanged (as a list).
    """
    out: list[tuple[str, bytes]] = [(k, v) for k, v in (headers or ()) if v is not None]
    if _provider is None:
        return out
    carrier = w3c.inject() if _short_path else None
    if carrier is None:
        carrier = []
        propagate.inject(carrier, setter=_setter)
    if not carrier:
        return out
    injected = {k for k, _ in carrier}
    return [(k, v) for k, v in out if k not in injected] + carrier


def extract_context(headers: KafkaHeaders | None) -> otel_context.Context:
    """The trace context carried by a Kafka record's headers (empty when none, or when off).

    Pass it as ``context=`` to ``tracer.start_as_current_span`` so the processing span is a
    child of the span that produced the record.
    """
    if _provider is None or not headers:
        return _EMPTY
    if _short_path:
        context = w3c.extract(headers)
        if context is not None:
            return context
    return propagate.extract(headers, getter=_getter, context=_EMPTY)


def start_record_span(tracer: trace.Tracer, msg: KafkaRecord) -> trace.Span:
    """Start (not as current) the span of one consumed record's processing: a child of the
    span that produced the record (its headers), named ``<topic> process``. End it yourself.
    Off: the API's invalid span, shared, on which every call is a no-op. A record whose
    producer's span was not sampled, under a sampler that then drops its children (the
    ``parentbased_*`` ones), gets that span's context back, not recording: the sampler's
    decision without its cost, and the records produced meanwhile carry the same unsampled
    context on."""
    if _provider is None:
        return trace.INVALID_SPAN
    context = extract_context(msg.headers())
    if _drop_unsampled:
        parent = trace.get_current_span(context)
        parent_context = parent.get_span_context()
        if parent_context.is_valid and not parent_context.trace_flags.sampled:
            return parent
    # Only the record's position: each attribute costs every record a few microseconds (the
    # topic is in the name; the system and operation are the same on every such span).
    return tracer.start_span(
        f"{msg.topic()} process",
        context=context,
        kind=trace.SpanKind.CONSUMER,
        attributes={
            "messaging.destination.partition.id": str(msg.partition()),
            "messaging.kafka.offset": msg.offset() or 0,
        },
    )


def produce_span(tracer: trace.Tracer, topic: str) -> ContextManager[trace.Span]:
    """A new trace's first span, current while an event enters the pipeline (a replay, the
    demo): ``<topic> publish``, kind PRODUCER; the record produced meanwhile carries it."""
    if _provider is None:
        return _OFF
    return tracer.start_as_current_span(
        f"{topic} publish",
        kind=trace.SpanKind.PRODUCER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.destination.name": topic,
        },
    )


class _Current:
    """``span`` current within a ``with`` block; ended on leaving it when ``end``. Leaner than
    ``trace.use_span`` (a generator): it runs once per record."""

    __slots__ = ("_end", "_span", "_token")

    def __init__(self, span: trace.Span, end: bool) -> None:
        self._span = span
        self._end = end
        self._token: object = None

    def __enter__(self) -> trace.Span:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _: Any) -> None:
        try:
            if self._end:
                if exc is not None and self._span.is_recording():
                    self._span.record_exception(exc)
                    self._span.set_status(trace.Status(trace.StatusCode.ERROR, str(exc)[:200]))
                self._span.end()
        finally:
            otel_context.detach(self._token)  # type: ignore[arg-type]


def use_span(span: trace.Span) -> ContextManager[trace.Span]:
    """Make ``span`` current (records produced meanwhile carry its context) without ending it."""
    if _provider is None:
        return _OFF
    return _Current(span, end=False)


def record_span(tracer: trace.Tracer, msg: KafkaRecord) -> ContextManager[trace.Span]:
    """``start_record_span`` as the current span for a ``with`` block, ended on leaving it."""
    if _provider is None:
        return _OFF
    return _Current(start_record_span(tracer, msg), end=True)


@contextlib.contextmanager
def _record_context(msg: KafkaRecord) -> Iterator[None]:
    if trace.get_current_span().get_span_context().is_valid:
        yield
        return
    token = otel_context.attach(extract_context(msg.headers()))
    try:
        yield
    finally:
        otel_context.detach(token)


def record_context(msg: KafkaRecord) -> ContextManager[None]:
    """Within it, records produced carry the current span's context or, with no current span,
    the consumed record's own (a dead letter sent by the loop's safety net stays in the trace
    of the record it carries)."""
    if _provider is None:
        return _OFF_NONE
    return _record_context(msg)


def links_to(spans: Iterable[trace.Span]) -> list[trace.Link]:
    """Links to the sampled ones of ``spans`` (an unsampled span is exported nowhere). The SDK
    keeps the first ``OTEL_SPAN_LINK_COUNT_LIMIT`` (128) of a span's links."""
    if _provider is None:
        return []
    links = []
    for span in spans:
        ctx = span.get_span_context()
        if ctx.is_valid and ctx.trace_flags.sampled:
            links.append(trace.Link(ctx))
    return links


def store_span(
    tracer: trace.Tracer,
    store: str,
    operation: str,
    size: int,
    links: Sequence[trace.Link] = (),
) -> ContextManager[trace.Span]:
    """The current span of one batch write to a store: ``<store> <operation>``, kind CLIENT,
    with ``mpp.store``, ``mpp.store.operation`` and ``mpp.batch.size``, linked to the spans of
    the records in the batch (``links_to``). An exception leaving it marks the span an error."""
    if _provider is None:
        return _OFF
    return tracer.start_as_current_span(
        f"{store} {operation}",
        kind=trace.SpanKind.CLIENT,
        links=links,
        attributes={
            "mpp.store": store,
            "mpp.store.operation": operation,
            "mpp.batch.size": size,
        },
    )


def shutdown_tracing() -> None:
    """Flush pending spans and stop the exporters (safe to call when tracing is off or twice)."""
    global _provider, _short_path, _drop_unsampled
    with _lock:
        provider, _provider = _provider, None
        _short_path = _drop_unsampled = False
    if provider is not None:
        provider.shutdown()


def _reset_for_tests() -> None:
    """Forget the installed provider, including the API's set-once global (tests only)."""
    global _provider
    from opentelemetry.util._once import Once

    shutdown_tracing()
    _provider = None
    trace._TRACER_PROVIDER = None
    trace._TRACER_PROVIDER_SET_ONCE = Once()
