"""The recommender's spans (#16), through its real front doors (FastAPI in a test client,
grpc.aio on a loopback port) and its real core, with the stores replaced by objects in memory
(recommender_memory.py): a request span per call, one child per source consulted with its
outcome, a cache hit with the cache child only, degraded and skipped sources, and the metrics
that move with them. Tracing off by default and the metrics alone: test_recommender_metrics.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from mpp_recommender.core import Recommender
from mpp_recommender.grpc_api import build_server
from opentelemetry.instrumentation.grpc import aio_client_interceptors
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from mpp.config import AuthSettings, GrpcSettings, Settings
from mpp.v1 import recommender_pb2 as R
from mpp.v1 import recommender_pb2_grpc as RG

from .recommender_memory import clean_otel as clean_otel  # the autouse fixture
from .recommender_memory import core as core  # the fixture
from .recommender_memory import http, memory_core, metric
from .recommender_memory import spans as spans  # the fixture

SOURCES = ["cache", "graph", "popularity", "session", "vector"]


def children(finished: tuple[ReadableSpan, ...], parent: ReadableSpan) -> list[ReadableSpan]:
    return sorted(
        (
            s
            for s in finished
            if s.parent is not None and s.parent.span_id == parent.context.span_id
        ),
        key=lambda s: s.name,
    )


def request_spans(finished: tuple[ReadableSpan, ...]) -> list[ReadableSpan]:
    return sorted(
        (s for s in finished if s.kind == SpanKind.SERVER), key=lambda s: s.start_time or 0
    )


def outcomes(spans: list[ReadableSpan]) -> dict[str, tuple[Any, Any]]:
    return {
        s.name: (s.attributes.get("mpp.source.outcome"), s.attributes.get("mpp.source.reason"))
        for s in spans
        if s.attributes is not None
    }


# -- spans ----------------------------------------------------------------------------------


def test_a_miss_has_one_child_per_source_then_a_hit_only_the_cache(
    spans: InMemorySpanExporter, core: Recommender
) -> None:
    client = http(core)
    first = client.get("/recommendations/traveller-1")
    assert first.status_code == 200
    assert first.json()["strategy"] == "personalized"
    second = client.get("/recommendations/traveller-1")
    assert second.json()["cached"] is True

    finished = spans.get_finished_spans()
    miss, hit = request_spans(finished)
    assert miss.name == "GET /recommendations/{user_id}"
    sources = children(finished, miss)
    assert [s.name for s in sources] == SOURCES
    assert outcomes(sources) == {
        "cache": ("miss", None),
        "session": ("ok", None),
        "vector": ("ok", None),
        "graph": ("ok", None),
        "popularity": ("ok", None),
    }
    assert {s.context.trace_id for s in sources} == {miss.context.trace_id}
    assert {s.attributes["mpp.source.store"] for s in sources if s.attributes} == {
        "redis",
        "milvus",
        "neo4j",
        "postgres",
    }
    assert miss.attributes is not None
    assert miss.attributes["mpp.recommend.strategy"] == "personalized"
    assert miss.attributes["mpp.recommend.cached"] is False

    only = children(finished, hit)
    assert [s.name for s in only] == ["cache"]
    assert outcomes(only) == {"cache": ("hit", None)}
    assert hit.attributes is not None and hit.attributes["mpp.recommend.cached"] is True
    # No span names the user: the path becomes its template.
    for span in finished:
        for value in (span.attributes or {}).values():
            assert "traveller-1" not in str(value), (span.name, value)


def test_degraded_and_skipped_sources_say_why(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    core = memory_core(breaker_failures=1, timeout_s=0.05)
    core.neo4j.error = RuntimeError("neo4j: connection refused")  # type: ignore[attr-defined]
    core.milvus.delay_s = 0.3  # type: ignore[attr-defined]
    before = {
        ("graph", "error"): metric("mpp_source_degraded_total", source="graph", reason="error"),
        ("vector", "timeout"): metric(
            "mpp_source_degraded_total", source="vector", reason="timeout"
        ),
        ("graph", "breaker_open"): metric(
            "mpp_source_degraded_total", source="graph", reason="breaker_open"
        ),
        ("graph", "skipped"): metric("mpp_source_calls_total", source="graph", outcome="skipped"),
    }
    client = http(core)
    try:
        first = client.get("/recommendations/u-1").json()
        assert sorted(first["degraded_sources"]) == ["milvus", "neo4j"]
        # Both breakers opened (one failure is enough here): the next request skips them.
        second = client.get("/recommendations/u-2").json()
        assert sorted(second["degraded_sources"]) == ["milvus", "neo4j"]
    finally:
        core.candidates.close(wait=True)
        core.requests.shutdown(wait=True)

    finished = spans.get_finished_spans()
    failed, skipped = (children(finished, r) for r in request_spans(finished))
    assert outcomes(failed) == {
        "cache": ("miss", None),
        "session": ("ok", None),
        "vector": ("degraded", "timeout"),
        "graph": ("degraded", "error"),
        "popularity": ("ok", None),
    }
    graph = next(s for s in failed if s.name == "graph")
    assert graph.status.status_code == StatusCode.ERROR
    assert [e.name for e in graph.events] == ["exception"]
    # The timed-out span ends at the deadline, not when the late call returns.
    vector = next(s for s in failed if s.name == "vector")
    assert vector.end_time is not None and vector.start_time is not None
    assert (vector.end_time - vector.start_time) / 1e9 < 0.25
    assert outcomes(skipped)["vector"] == ("skipped", "breaker_open")
    assert outcomes(skipped)["graph"] == ("skipped", "breaker_open")

    assert metric("mpp_source_degraded_total", source="graph", reason="error") == (
        before[("graph", "error")] + 1
    )
    assert metric("mpp_source_degraded_total", source="vector", reason="timeout") == (
        before[("vector", "timeout")] + 1
    )
    assert metric("mpp_source_degraded_total", source="graph", reason="breaker_open") == (
        before[("graph", "breaker_open")] + 1
    )
    assert metric("mpp_source_calls_total", source="graph", outcome="skipped") == (
        before[("graph", "skipped")] + 1
    )
    assert metric("mpp_breaker_open", source="graph") == 1
    assert metric("mpp_breaker_open", source="vector") == 1


def test_redis_down_is_a_cache_error_and_a_degraded_session(
    spans: InMemorySpanExporter, core: Recommender
) -> None:
    core.cache.down = True  # type: ignore[attr-defined]
    errors = metric("mpp_cache_requests_total", outcome="error")
    answer = http(core).get("/recommendations/u-3").json()
    assert answer["degraded_sources"] == ["redis"]
    assert answer["items"], "answered without Redis"
    finished = spans.get_finished_spans()
    (request,) = request_spans(finished)
    assert outcomes(children(finished, request)) == {
        "cache": ("error", "error"),
        "session": ("degraded", "error"),
        "vector": ("ok", None),
        "graph": ("ok", None),
        "popularity": ("ok", None),
    }
    assert metric("mpp_cache_requests_total", outcome="error") == errors + 1


def test_a_grpc_call_continues_the_clients_trace(
    spans: InMemorySpanExporter, core: Recommender
) -> None:
    settings = Settings(auth=AuthSettings(enabled=False), grpc=GrpcSettings(port=0))
    ok = metric("mpp_requests_total", api="grpc", method="Recommend", code="OK")
    invalid = metric("mpp_requests_total", api="grpc", method="Recommend", code="INVALID_ARGUMENT")

    async def calls() -> tuple[R.RecommendResponse, R.RecommendResponse, grpc.StatusCode]:
        server, port = await build_server(settings, core, tracing=True)
        await server.start()
        try:
            async with grpc.aio.insecure_channel(
                f"127.0.0.1:{port}",
                interceptors=aio_client_interceptors(),  # type: ignore[no-untyped-call]
            ) as channel:
                stub = RG.RecommenderStub(channel)
                first = await stub.Recommend(R.RecommendRequest(user_id="grpc-user"))
                second = await stub.Recommend(R.RecommendRequest(user_id="grpc-user"))
                with pytest.raises(grpc.aio.AioRpcError) as bad:
                    await stub.Recommend(R.RecommendRequest(user_id="not ok"))
                return first, second, bad.value.code()
        finally:
            await server.stop(None)

    first, second, code = asyncio.run(calls())
    assert not first.cached and second.cached
    assert code == grpc.StatusCode.INVALID_ARGUMENT

    finished = spans.get_finished_spans()
    clients = sorted(
        (s for s in finished if s.kind == SpanKind.CLIENT), key=lambda s: s.start_time or 0
    )
    servers = request_spans(finished)
    assert len(clients) == len(servers) == 3
    for client_span, server_span in zip(clients, servers, strict=True):
        assert server_span.name == "/mpp.v1.Recommender/Recommend"
        assert server_span.context.trace_id == client_span.context.trace_id
        assert server_span.parent is not None
        assert server_span.parent.span_id == client_span.context.span_id
    assert [s.name for s in children(finished, servers[0])] == SOURCES
    assert outcomes(children(finished, servers[1])) == {"cache": ("hit", None)}
    assert children(finished, servers[2]) == []
    assert metric("mpp_requests_total", api="grpc", method="Recommend", code="OK") == ok + 2
    assert (
        metric("mpp_requests_total", api="grpc", method="Recommend", code="INVALID_ARGUMENT")
        == invalid + 1
    )
