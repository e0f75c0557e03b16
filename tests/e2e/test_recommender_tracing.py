"""#16's acceptance for the recommender: a gRPC Recommend call gives one trace in the local
Jaeger, client -> server -> one span per source with its outcome; the same call again (a cache
hit) has only the cache span under the server's.

The recommender runs as its own process on the local stack (its own database, collections and
topics), with tracing turned on by the standard OTEL_* variables only; the test is the gRPC
client, traced through OpenTelemetry's gRPC client instrumentation, which sends its context in
the call's metadata. Both export over OTLP to Jaeger, and the trace is read back from Jaeger's
query API."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import client_interceptor
from opentelemetry.instrumentation.grpc.grpcext import intercept_channel

from mpp.config import Settings
from mpp.pipeline import Pipeline, log
from mpp.v1 import recommender_pb2 as R
from mpp.v1 import recommender_pb2_grpc as RG
from tests.e2e.pipeline import isolated_run
from tests.observability import Jaeger
from tests.otel import clean_tracing, trace_to

CLIENT = "mpp-e2e-client"
SOURCES = {"cache", "session", "vector", "graph", "popularity"}
RECOMMEND = "/mpp.v1.Recommender/Recommend"


@pytest.fixture
def run(
    database_settings: Settings, unique: str, tmp_path: Path, jaeger: Jaeger
) -> Iterator[Pipeline]:
    extra_env = {
        "MPP_POSTGRES__DATABASE": database_settings.postgres.database,
        "MPP_AUTH__ENABLED": "false",
        # What the trace says, not how fast a source is: a busy machine may miss 0.25 s.
        "MPP_RECOMMENDER__MILVUS_TIMEOUT_S": "2",
        "MPP_RECOMMENDER__NEO4J_TIMEOUT_S": "2",
        "MPP_RECOMMENDER__POSTGRES_TIMEOUT_S": "2",
        # Tracing on, by the standard variables only; spans exported every 0.2 s.
        "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    with isolated_run(database_settings, unique, tmp_path, extra_env, campaigns=True) as run:
        yield run


@pytest.fixture
def client_tracing(monkeypatch: pytest.MonkeyPatch, jaeger: Jaeger) -> Iterator[None]:
    """This process traced as CLIENT, exporting to the same Jaeger; undone afterwards."""
    with clean_tracing(monkeypatch):
        trace_to(monkeypatch, jaeger.otlp_endpoint, CLIENT)
        yield


def tags(span: dict[str, Any]) -> dict[str, Any]:
    return {t["key"]: t["value"] for t in span.get("tags", [])}


def parent_id(span: dict[str, Any]) -> str | None:
    refs = [r for r in span.get("references", []) if r.get("refType") == "CHILD_OF"]
    return refs[0]["spanID"] if refs else None


class Trace:
    """A trace as Jaeger's query API returns it, by span and service."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.spans: list[dict[str, Any]] = data["spans"]
        processes = data["processes"]
        self.service = {s["spanID"]: processes[s["processID"]]["serviceName"] for s in self.spans}

    def find(self, service: str, name: str, kind: str | None = None) -> list[dict[str, Any]]:
        return [
            s
            for s in self.spans
            if self.service[s["spanID"]] == service
            and s["operationName"] == name
            and (kind is None or tags(s).get("span.kind") == kind)
        ]

    def children(self, span: dict[str, Any]) -> list[dict[str, Any]]:
        return [s for s in self.spans if parent_id(s) == span["spanID"]]


def traced_call(stub: RG.RecommenderStub, user: str) -> tuple[R.RecommendResponse, str]:
    """One Recommend under a span of this test; the answer and the trace's id (hex)."""
    with trace.get_tracer("tests.e2e").start_as_current_span("e2e recommend") as span:
        answer = stub.Recommend(R.RecommendRequest(user_id=user, limit=5), timeout=30)
        return answer, format(span.get_span_context().trace_id, "032x")


def wait_for(jaeger: Jaeger, trace_id: str, done: Any, timeout_s: float = 60) -> Trace:
    """The trace once ``done`` accepts it (the services export in batches)."""
    deadline = time.monotonic() + timeout_s
    last: Trace | None = None
    while time.monotonic() < deadline:
        data = jaeger.trace(trace_id)
        if data is not None:
            last = Trace(data)
            if done(last):
                return last
        time.sleep(0.5)
    seen = [(last.service[s["spanID"]], s["operationName"]) for s in last.spans] if last else []
    raise AssertionError(f"trace {trace_id} incomplete after {timeout_s}s: {seen}")


def server_with_sources(t: Trace, count: int) -> bool:
    servers = t.find("recommender", RECOMMEND, "server")
    return len(servers) == 1 and len(t.children(servers[0])) >= count


def test_a_grpc_recommend_is_one_trace_client_server_and_a_span_per_source(
    run: Pipeline, jaeger: Jaeger, client_tracing: None
) -> None:
    run.start("recommender")
    # The instrumentation's own channel wrapper (its interceptor is not grpc's kind).
    channel = intercept_channel(  # type: ignore[no-untyped-call]
        grpc.insecure_channel(f"127.0.0.1:{run.grpc_port}"),
        client_interceptor(),  # type: ignore[no-untyped-call]
    )
    stub = RG.RecommenderStub(channel)
    user = f"{run.run_id}-newcomer"
    first, first_id = traced_call(stub, user)
    second, second_id = traced_call(stub, user)
    channel.close()
    assert not first.cached and second.cached
    assert first.strategy == "cold_start" and not first.degraded_sources
    assert first_id != second_id
    # This process's spans leave now; the service's within its 0.2 s batch delay.
    trace.get_tracer_provider().force_flush()  # type: ignore[attr-defined]

    started = time.perf_counter()
    miss = wait_for(jaeger, first_id, lambda t: server_with_sources(t, len(SOURCES)))
    log(f"miss trace complete in Jaeger after {time.perf_counter() - started:.1f} s")
    (client,) = miss.find(CLIENT, RECOMMEND, "client")
    (server,) = miss.find("recommender", RECOMMEND, "server")
    assert parent_id(server) == client["spanID"], "the server span continues the client's"
    (root,) = miss.find(CLIENT, "e2e recommend")
    assert parent_id(client) == root["spanID"]
    sources = miss.children(server)
    assert sorted(s["operationName"] for s in sources) == sorted(SOURCES)
    assert {miss.service[s["spanID"]] for s in sources} == {"recommender"}
    outcomes = {s["operationName"]: tags(s).get("mpp.source.outcome") for s in sources}
    assert outcomes == {
        "cache": "miss",
        "session": "ok",
        "vector": "ok",
        "graph": "ok",
        "popularity": "ok",
    }
    assert tags(server).get("mpp.recommend.strategy") == "cold_start"
    for span in miss.spans:
        for value in tags(span).values():
            assert user not in str(value), (span["operationName"], value)

    hit = wait_for(jaeger, second_id, lambda t: server_with_sources(t, 1))
    (client,) = hit.find(CLIENT, RECOMMEND, "client")
    (server,) = hit.find("recommender", RECOMMEND, "server")
    assert parent_id(server) == client["spanID"]
    # The service may still be exporting: give a late span the time to arrive.
    time.sleep(1.0)
    hit = wait_for(jaeger, second_id, lambda t: server_with_sources(t, 1))
    (server,) = hit.find("recommender", RECOMMEND, "server")
    only = hit.children(server)
    assert [(s["operationName"], tags(s).get("mpp.source.outcome")) for s in only] == [
        ("cache", "hit")
    ]
    assert tags(server).get("mpp.recommend.cached") is True
