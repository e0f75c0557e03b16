"""#16's acceptance for the stream: one chat event is one trace in the local Jaeger.

The five pipeline services run as processes on the local stack (their own topics, consumer
groups, collections and database), tracing turned on by the standard OTEL_* variables only and
exported over OTLP to Jaeger. This process produces ONE raw event under a span of its own, and
the test reads back, through Jaeger's query API:
- one trace holding a processing span from ingest, the embedder, the vector-writer, the
  graph-writer and analytics, each the CHILD of the span that produced its record (the test's
  publish span -> ingest -> embedder -> each writer and analytics);
- for each store (Milvus, Neo4j, PostgreSQL) the batch write's span, naming the store and the
  batch size, linked to that service's span of the record;
and, the services stopped, that every line of their logs is a JSON object.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace

from mpp import tracing
from mpp.config import Settings
from mpp.pipeline import Pipeline, log
from tests.e2e.pipeline import isolated_run
from tests.observability import Jaeger
from tests.otel import clean_tracing, trace_to

pytestmark = pytest.mark.timeout(600)

PRODUCER = "mpp-e2e-producer"
STREAM = ("ingest", "embedder", "vector-writer", "graph-writer", "analytics")
# The store each writer's batch span names, and that span's name.
STORES = {
    "vector-writer": ("milvus", "milvus upsert"),
    "graph-writer": ("neo4j", "neo4j merge"),
    "analytics": ("postgres", "postgres insert"),
}


@pytest.fixture
def run(
    database_settings: Settings, unique: str, tmp_path: Path, jaeger: Jaeger
) -> Iterator[Pipeline]:
    extra_env = {
        "MPP_POSTGRES__DATABASE": database_settings.postgres.database,
        "MPP_ANALYTICS__WAREHOUSE_SYNC_ENABLED": "false",
        # Tracing on, by the standard variables only; every trace kept, spans sent every 0.2 s.
        "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_TRACES_SAMPLER": "always_on",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    with isolated_run(database_settings, unique, tmp_path, extra_env, campaigns=True) as run:
        yield run


@pytest.fixture
def producer_tracing(monkeypatch: pytest.MonkeyPatch, jaeger: Jaeger) -> Iterator[None]:
    """This process traced as the event's producer, exporting to the same Jaeger. Its name is
    given to ``configure_tracing``, not by OTEL_SERVICE_NAME: the services started afterwards
    inherit this environment, and must keep their own names."""
    with clean_tracing(monkeypatch):
        trace_to(monkeypatch, jaeger.otlp_endpoint, PRODUCER, sampler="always_on")
        yield


def tags(span: dict[str, Any]) -> dict[str, Any]:
    return {t["key"]: t["value"] for t in span.get("tags", [])}


def refs(span: dict[str, Any], kind: str) -> list[tuple[str, str]]:
    """(traceID, spanID) of the span's references of ``kind`` (CHILD_OF, FOLLOWS_FROM)."""
    return [(r["traceID"], r["spanID"]) for r in span.get("references", []) if r["refType"] == kind]


def services_of(data: dict[str, Any]) -> dict[str, str]:
    processes = data["processes"]
    return {s["spanID"]: processes[s["processID"]]["serviceName"] for s in data["spans"]}


def record_spans(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each stream service's span of the event's record (``<topic> process``), by service."""
    service = services_of(data)
    found: dict[str, dict[str, Any]] = {}
    for span in data["spans"]:
        name = service[span["spanID"]]
        if name in STREAM and span["operationName"].endswith(" process"):
            assert name not in found, f"{name} processed the one event twice: {data['spans']}"
            found[name] = span
    return found


def wait_for_trace(jaeger: Jaeger, trace_id: str, timeout_s: float = 90) -> dict[str, Any]:
    """The event's trace once every stream service's span is in it."""
    deadline = time.monotonic() + timeout_s
    data: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        data = jaeger.trace(trace_id)
        if data is not None and set(record_spans(data)) == set(STREAM):
            return data
        time.sleep(0.5)
    seen = sorted(set(services_of(data).values())) if data else []
    raise AssertionError(f"trace {trace_id}: services {seen} after {timeout_s}s, want {STREAM}")


def wait_for_write(
    jaeger: Jaeger, service: str, store: str, linked: tuple[str, str], timeout_s: float = 60
) -> dict[str, Any]:
    """``service``'s batch write span for ``store`` that links to the ``linked`` span."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for data in jaeger.traces(service, lookback_s=600, tags={"mpp.store": store}):
            for span in data["spans"]:
                if linked in refs(span, "FOLLOWS_FROM"):
                    return span
        time.sleep(0.5)
    raise AssertionError(f"no {store} write span of {service} links to span {linked[1]}")


def test_one_event_is_one_trace_across_the_services(
    run: Pipeline, jaeger: Jaeger, producer_tracing: None
) -> None:
    run.start(*STREAM)
    user = f"{run.run_id}-traced"
    event = {
        "user_id": user,
        "message": "my invoice shows a double charge, can you refund it?",
        "timestamp": int(time.time() * 1000),
        "channel": "chat",
    }
    with trace.get_tracer("tests.e2e").start_as_current_span("e2e event") as root:
        run.produce([json.dumps(event).encode()], [user.encode()])
    trace_id = format(root.get_span_context().trace_id, "032x")
    tracing.shutdown_tracing()  # this process's spans sent now
    run.wait_drained(timeout_s=300)
    log(f"drained; reading trace {trace_id} from Jaeger")

    data = wait_for_trace(jaeger, trace_id)
    spans = {s["spanID"]: s for s in data["spans"]}
    service = services_of(data)
    ours = record_spans(data)

    # The chain of parents: publish (this process) -> ingest -> embedder -> the three readers
    # of the enriched topic; one trace id throughout.
    publish = [
        s
        for s in data["spans"]
        if service[s["spanID"]] == PRODUCER and s["operationName"].endswith(" publish")
    ]
    assert len(publish) == 1, [s["operationName"] for s in data["spans"]]
    parent_of = {"ingest": publish[0], "embedder": ours["ingest"]}
    parent_of |= {name: ours["embedder"] for name in ("vector-writer", "graph-writer", "analytics")}
    for name, parent in parent_of.items():
        span = ours[name]
        assert refs(span, "CHILD_OF") == [(trace_id, parent["spanID"])], (name, span)
        assert spans[parent["spanID"]] is parent
        assert tags(span)["span.kind"] == "consumer"
    # The record's id on every span past ingest's validation: the same message throughout.
    message_ids = {tags(ours[name]).get("mpp.message_id") for name in STREAM}
    assert len(message_ids) == 1 and None not in message_ids, message_ids

    # Each store's batch write: one span naming the store and the batch size (one event),
    # linked to the span of the record it wrote.
    for name, (store, operation) in STORES.items():
        linked = (trace_id, ours[name]["spanID"])
        write = wait_for_write(jaeger, name, store, linked)
        attributes = tags(write)
        assert write["operationName"] == operation
        assert attributes["mpp.store"] == store
        assert attributes["mpp.batch.size"] == 1
        assert attributes["span.kind"] == "client"
        assert refs(write, "FOLLOWS_FROM") == [linked]

    # Every line the services wrote on stderr, up to their exit, is one JSON object (#16's
    # logs: librdkafka's and the standard library's lines go through the same renderer).
    run.stop()
    for name in STREAM:
        lines = run.processes[name].log_file.read_text().splitlines()
        assert lines, name
        for line in lines:
            try:
                parsed = json.loads(line)
            except json.JSONDecodeError:
                raise AssertionError(f"{name}: a log line is not JSON: {line[:300]!r}") from None
            assert isinstance(parsed, dict) and parsed.get("service") == name, (name, line)
