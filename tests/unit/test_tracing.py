"""mpp.tracing: off by default, on by the OTEL_* variables, W3C context through Kafka headers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mpp import tracing
from tests.otel import clean_tracing, trace_into_memory


@pytest.fixture(autouse=True)
def clean_otel(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with clean_tracing(monkeypatch):
        yield


@pytest.fixture
def memory(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    return trace_into_memory(monkeypatch, "ingest")


def test_off_without_otel_variables() -> None:
    assert tracing.tracing_requested() is False
    assert tracing.configure_tracing("ingest") is False
    assert tracing.enabled() is False
    # The API's no-op tracer: spans are not recording and carry no valid context.
    with tracing.get_tracer("t").start_as_current_span("x") as span:
        assert not span.is_recording()
        assert tracing.inject_headers([("k", b"v")]) == [("k", b"v")]
    assert tracing.inject_headers(None) == []
    carried = [("traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01")]
    assert tracing.extract_context(carried) == {}


@pytest.mark.parametrize(
    ("name", "value", "on"),
    [
        ("OTEL_TRACES_EXPORTER", "otlp", True),
        ("OTEL_TRACES_EXPORTER", "console", True),
        ("OTEL_TRACES_EXPORTER", "none", False),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:14317", True),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:14317", True),
    ],
)
def test_on_by_the_standard_variables(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, on: bool
) -> None:
    monkeypatch.setenv(name, value)
    assert tracing.tracing_requested() is on
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert tracing.tracing_requested() is False


def test_configure_sets_service_name_and_is_idempotent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    assert tracing.configure_tracing("embedder") is True
    provider = trace.get_tracer_provider()
    assert provider.resource.attributes["service.name"] == "embedder"  # type: ignore[attr-defined]
    # A second call keeps the first provider (and does not warn about overriding it).
    assert tracing.configure_tracing("other") is True
    assert trace.get_tracer_provider() is provider
    tracing.shutdown_tracing()
    tracing.shutdown_tracing()  # twice is fine
    assert tracing.enabled() is False


def test_otel_service_name_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "ingest-canary")
    assert tracing.configure_tracing("ingest")
    provider = trace.get_tracer_provider()
    assert provider.resource.attributes["service.name"] == "ingest-canary"  # type: ignore[attr-defined]


def test_headers_round_trip_parent_and_child(memory: InMemorySpanExporter) -> None:
    tracer = tracing.get_tracer("test")
    with tracer.start_as_current_span("produce") as producer_span:
        headers = tracing.inject_headers([("content-type", b"application/json")])
    names = [k for k, _ in headers]
    assert names[0] == "content-type" and "traceparent" in names
    assert all(isinstance(v, bytes) for _, v in headers)

    ctx = tracing.extract_context(headers)
    with tracer.start_as_current_span("process", context=ctx) as consumer_span:
        # Re-producing replaces the input's traceparent with this span's, no duplicates.
        out = tracing.inject_headers(headers)
    assert [k for k, _ in out].count("traceparent") == 1
    traceparent = dict(out)["traceparent"].decode()
    assert traceparent.split("-")[2] == format(consumer_span.get_span_context().span_id, "016x")

    spans = {s.name: s for s in memory.get_finished_spans()}
    produced, processed = spans["produce"], spans["process"]
    assert processed.context.trace_id == produced.context.trace_id
    assert processed.parent is not None
    assert processed.parent.span_id == producer_span.get_span_context().span_id
    assert processed.parent.is_remote


def test_extract_without_trace_headers_is_empty(memory: InMemorySpanExporter) -> None:
    assert tracing.extract_context(None) == {}
    assert tracing.extract_context([("other", b"x"), ("none", None)]) == {}
    # A garbled traceparent yields no parent: the span starts a new trace.
    ctx = tracing.extract_context([("traceparent", b"not-a-traceparent")])
    with tracing.get_tracer("t").start_as_current_span("root", context=ctx):
        pass
    (root,) = memory.get_finished_spans()
    assert root.parent is None


def test_parent_based_sampler_follows_an_unsampled_parent(
    memory: InMemorySpanExporter,
) -> None:
    unsampled = [("traceparent", b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-00")]
    with tracing.get_tracer("t").start_as_current_span(
        "process", context=tracing.extract_context(unsampled)
    ) as span:
        assert not span.is_recording()
        # The decision travels on: the output record says "not sampled" too.
        out = dict(tracing.inject_headers(None))
    assert out["traceparent"].endswith(b"-00")
    assert memory.get_finished_spans() == ()
