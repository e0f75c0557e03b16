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

import os
import threading
from collections.abc import Iterable, Sequence

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

__all__ = [
    "configure_tracing",
    "enabled",
    "extract_context",
    "get_tracer",
    "inject_headers",
    "shutdown_tracing",
    "tracing_requested",
]

KafkaHeaders = Sequence[tuple[str, bytes | None]]

_lock = threading.Lock()
_provider: TracerProvider | None = None
_getter = KafkaContextGetter()
_setter = KafkaContextSetter()
_EMPTY = otel_context.Context()


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
    global _provider
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
        _provider = provider
        return True


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
    carrier: list[tuple[str, bytes]] = []
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
    return propagate.extract(headers, getter=_getter, context=_EMPTY)


def shutdown_tracing() -> None:
    """Flush pending spans and stop the exporters (safe to call when tracing is off or twice)."""
    global _provider
    with _lock:
        provider, _provider = _provider, None
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
