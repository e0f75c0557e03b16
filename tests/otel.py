"""Tracing in tests: each test starts from an environment without OTEL_* and an unconfigured
mpp.tracing, and traces into memory (unit tests) or to the local Jaeger (end-to-end tests)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mpp import tracing

OTEL_VARS = (
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_INSECURE",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_PROPAGATORS",
    "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS",
)


@contextmanager
def clean_tracing(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No OTEL_* variable and no tracer provider inside; the provider forgotten afterwards."""
    for name in OTEL_VARS:
        monkeypatch.delenv(name, raising=False)
    tracing._reset_for_tests()
    try:
        yield
    finally:
        tracing._reset_for_tests()


def trace_into_memory(monkeypatch: pytest.MonkeyPatch, service: str) -> InMemorySpanExporter:
    """Tracing turned on as a service turns it on (OTEL_TRACES_EXPORTER), spans kept in memory.
    Call it inside ``clean_tracing``."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    exporter = InMemorySpanExporter()
    assert tracing.configure_tracing(service, span_processors=[SimpleSpanProcessor(exporter)])
    return exporter


def trace_to(
    monkeypatch: pytest.MonkeyPatch, otlp_endpoint: str, service: str, sampler: str = ""
) -> None:
    """This test process traced as ``service``, exporting over OTLP to ``otlp_endpoint``. The
    name goes to ``configure_tracing``, never to OTEL_SERVICE_NAME: the services a test starts
    inherit its environment and must keep their own names. Call it inside ``clean_tracing``."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    if sampler:
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    assert tracing.configure_tracing(service)
