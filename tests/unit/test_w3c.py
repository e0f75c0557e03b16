"""mpp.w3c's short path gives what OpenTelemetry's propagators give, or hands over to them."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.instrumentation.confluent_kafka.utils import (
    KafkaContextGetter,
    KafkaContextSetter,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from mpp import tracing, w3c
from tests.otel import clean_tracing, trace_into_memory


@pytest.fixture(autouse=True)
def clean_otel(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with clean_tracing(monkeypatch):
        yield


def by_propagators(headers: list[tuple[str, bytes | None]]) -> SpanContext:
    ctx = propagate.extract(headers, getter=KafkaContextGetter(), context=otel_context.Context())
    return trace.get_current_span(ctx).get_span_context()


def short(headers: list[tuple[str, bytes | None]]) -> SpanContext | None:
    ctx = w3c.extract(headers)
    return None if ctx is None else trace.get_current_span(ctx).get_span_context()


def traceparent(rng: random.Random) -> bytes:
    trace_id, span_id = rng.getrandbits(128), rng.getrandbits(64)
    return b"00-%032x-%016x-%02x" % (trace_id, span_id, rng.choice([0, 1, 2, 3, 255]))


def test_extract_matches_the_propagators_on_random_headers() -> None:
    rng = random.Random(7)
    for _ in range(500):
        headers: list[tuple[str, bytes | None]] = [("content-type", b"x")]
        headers.append(("traceparent", traceparent(rng)))
        if rng.random() < 0.3:
            headers.insert(0, ("traceparent", None))  # no value: the getter skips it
        if rng.random() < 0.3:
            headers.append(("traceparent", traceparent(rng)))  # the first one counts
        got = short(headers)
        assert got is not None
        assert got == by_propagators(headers)


@pytest.mark.parametrize(
    ("value", "read"),
    [
        (b"00-" + b"0" * 32 + b"-" + b"1" * 16 + b"-01", True),  # zero trace id
        (b"00-" + b"1" * 32 + b"-" + b"0" * 16 + b"-01", True),  # zero span id
        (b"00-" + b"A" * 32 + b"-" + b"1" * 16 + b"-01", False),  # upper case
        (b"00-" + b"1" * 32 + b"-" + b"1" * 16 + b"-01-extra", False),
        (b"ff-" + b"1" * 32 + b"-" + b"1" * 16 + b"-01", False),
        (b"01-" + b"1" * 32 + b"-" + b"1" * 16 + b"-01-future", False),
        (b" 00-" + b"1" * 32 + b"-" + b"1" * 16 + b"-01", False),
        (b"garbage", False),
    ],
)
def test_extract_of_odd_traceparents(value: bytes, read: bool) -> None:
    """The short path reads only the plain version-00 form (an invalid id: an empty context,
    as the propagators give) and hands the rest over: mpp.tracing.extract_context then asks
    the propagators."""
    headers: list[tuple[str, bytes | None]] = [("traceparent", value)]
    got = short(headers)
    if read:
        assert got == by_propagators(headers) == trace.INVALID_SPAN_CONTEXT
    else:
        assert got is None


@pytest.mark.parametrize("other", ["tracestate", "baggage"])
def test_other_context_headers_go_to_the_propagators(other: str) -> None:
    headers: list[tuple[str, bytes | None]] = [
        ("traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01"),
        (other, b"k=v"),
    ]
    assert w3c.extract(headers) is None
    assert w3c.extract([("content-type", b"x")]) == {}


def test_inject_matches_the_propagators_on_random_contexts() -> None:
    rng = random.Random(11)
    setter = KafkaContextSetter()
    for _ in range(500):
        span_context = SpanContext(
            rng.getrandbits(128) or 1,
            rng.getrandbits(64) or 1,
            is_remote=rng.random() < 0.5,
            trace_flags=TraceFlags(rng.choice([0, 1])),
        )
        token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(span_context)))
        try:
            expected: list[tuple[str, bytes]] = []
            propagate.inject(expected, setter=setter)
            assert w3c.inject() == expected
        finally:
            otel_context.detach(token)
    assert w3c.inject() == []  # no current span: no header, as the propagators do


def test_inject_hands_trace_state_and_baggage_to_the_propagators() -> None:
    with_state = SpanContext(1, 2, is_remote=True, trace_state=TraceState([("k", "v")]))
    token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(with_state)))
    try:
        assert w3c.inject() is None
    finally:
        otel_context.detach(token)
    token = otel_context.attach(baggage.set_baggage("campaign", "spring"))
    try:
        assert w3c.inject() is None
    finally:
        otel_context.detach(token)


@pytest.mark.parametrize(
    ("value", "allowed"),
    [
        ("", True),
        ("tracecontext,baggage", True),
        ("tracecontext", True),
        (" baggage , tracecontext ", True),
        ("b3", False),
        ("tracecontext,b3", False),
        ("baggage", False),
    ],
)
def test_short_path_only_under_the_w3c_propagators(
    monkeypatch: pytest.MonkeyPatch, value: str, allowed: bool
) -> None:
    monkeypatch.setenv("OTEL_PROPAGATORS", value)
    assert w3c.short_path_allowed() is allowed


class Record:
    def __init__(self, headers: list[tuple[str, bytes]]) -> None:
        self._headers = headers

    def topic(self) -> str:
        return "mpp.validated"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 3

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers


UNSAMPLED = b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-00"
SAMPLED = b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01"


def test_unsampled_record_gets_no_span_and_passes_its_context_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    memory = trace_into_memory(monkeypatch, "embedder")  # default: parentbased_always_on
    tracer = tracing.get_tracer("t")
    span = tracing.start_record_span(tracer, Record([("traceparent", UNSAMPLED)]))
    assert not span.is_recording()
    with tracing.use_span(span):
        out = dict(tracing.inject_headers(None))
    span.end()
    # The same trace, still unsampled: the next service drops its span too.
    assert out["traceparent"] == UNSAMPLED
    sampled = tracing.start_record_span(tracer, Record([("traceparent", SAMPLED)]))
    assert sampled.is_recording()
    sampled.end()
    (recorded,) = memory.get_finished_spans()
    assert recorded.parent is not None and recorded.parent.span_id == int("b" * 16, 16)


def test_a_sampler_that_ignores_the_parent_still_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    """always_on is not parent-based: an unsampled parent's child is recorded."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
    memory: InMemorySpanExporter = trace_into_memory(monkeypatch, "embedder")
    span = tracing.start_record_span(tracing.get_tracer("t"), Record([("traceparent", UNSAMPLED)]))
    assert span.is_recording()
    span.end()
    assert len(memory.get_finished_spans()) == 1
