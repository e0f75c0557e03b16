"""The local Jaeger and Prometheus through the tests' fixtures (tests/observability.py).

Prometheus scrapes a real /metrics endpoint of this test's own, found through a file-SD file;
Jaeger receives spans over OTLP/gRPC from the OpenTelemetry SDK and gives them back through its
query API.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from prometheus_client import CollectorRegistry, Counter, start_http_server

from tests.observability import Jaeger, Prometheus

pytestmark = pytest.mark.timeout(300)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def exporter_port() -> Iterator[tuple[int, Counter]]:
    """A /metrics endpoint of this test's own with one counter, on a free loopback port."""
    registry = CollectorRegistry()
    counter = Counter("mpp_fixture_probe_total", "A counter the test sets.", registry=registry)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield port, counter
    finally:
        server.shutdown()
        thread.join(timeout=5)


def test_prometheus_scrapes_targets_added_through_file_sd(
    prometheus: Prometheus, exporter_port: tuple[int, Counter]
) -> None:
    port, counter = exporter_port
    job = f"it-{uuid.uuid4().hex[:10]}"
    counter.inc(7)
    started = time.monotonic()
    prometheus.add_targets(job, [f"127.0.0.1:{port}"])
    expr = f'mpp_fixture_probe_total{{job="{job}"}}'
    assert prometheus.wait_for(expr, lambda v: v == 7, timeout_s=30) == 7
    assert prometheus.wait_for(f'up{{job="{job}"}}', lambda v: v == 1, timeout_s=10) == 1
    # Scraped every second: a change shows within a few seconds.
    counter.inc(5)
    assert prometheus.wait_for(expr, lambda v: v == 12, timeout_s=10) == 12
    (series,) = prometheus.query(expr)
    assert series["metric"]["instance"] == f"127.0.0.1:{port}"
    seconds = time.monotonic() - started
    # Removed, the target is dropped from the active ones.
    prometheus.remove_targets(job)
    deadline = time.monotonic() + 30
    while prometheus.query(f'up{{job="{job}"}}'):
        assert time.monotonic() < deadline, "the removed target is still scraped"
        time.sleep(0.5)
    assert seconds < 30


def test_prometheus_value_is_one_series_or_none(prometheus: Prometheus) -> None:
    assert prometheus.value("vector(3)") == 3.0
    assert prometheus.value("vector(1) > 2") is None
    two = 'label_replace(vector(1), "a", "x", "", "") or label_replace(vector(2), "a", "y", "", "")'
    assert len(prometheus.query(two)) == 2
    with pytest.raises(AssertionError, match="aggregate"):
        prometheus.value(two)
    assert prometheus.value(f"sum({two})") == 3.0


def test_jaeger_gives_back_the_spans_sent_over_otlp(jaeger: Jaeger) -> None:
    service = f"it-{uuid.uuid4().hex[:10]}"
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=jaeger.otlp_endpoint, insecure=True))
    )
    tracer = provider.get_tracer("tests.observability")
    with (
        tracer.start_as_current_span("parent", attributes={"run": service}) as parent,
        tracer.start_as_current_span("child"),
    ):
        pass
    provider.shutdown()
    trace_id = format(parent.get_span_context().trace_id, "032x")

    found = jaeger.wait_for_trace(lambda t: t["traceID"] == trace_id, service, timeout_s=30)
    assert sorted(s["operationName"] for s in found["spans"]) == ["child", "parent"]
    assert service in jaeger.services()
    whole = jaeger.trace(trace_id)
    assert whole is not None and len(whole["spans"]) == 2
    assert jaeger.traces(service, tags={"run": service})[0]["traceID"] == trace_id
    assert jaeger.traces(service, tags={"run": "another"}) == []
    assert jaeger.trace("0" * 31 + "1") is None
