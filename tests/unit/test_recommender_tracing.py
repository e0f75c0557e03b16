"""The recommender's spans and metrics (#16), through its real front doors (FastAPI in a test
client, grpc.aio on a loopback port) and its real core, with the stores replaced by objects
in memory: a request span per call, one child per source consulted with its outcome, a cache
hit with the cache child only, degraded and skipped sources, and the metrics that move."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from fastapi.testclient import TestClient
from mpp_recommender.answers import AnswerCache
from mpp_recommender.blend import CampaignInfo, Candidate, Reason, UserRules
from mpp_recommender.breaker import CircuitBreaker
from mpp_recommender.cache import Lookup, Session
from mpp_recommender.candidates import Candidates
from mpp_recommender.core import Recommender
from mpp_recommender.erasure import ErasedUsers
from mpp_recommender.grpc_api import build_server
from mpp_recommender.http_api import create_app
from mpp_recommender.sources import SourceAnswer
from mpp_recommender.telemetry import SourceCall, note_breaker
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from mpp import tracing
from mpp.config import AuthSettings, GrpcSettings, RecommenderSettings, Settings
from mpp.v1 import recommender_pb2 as R
from mpp.v1 import recommender_pb2_grpc as RG
from tests.otel import clean_tracing, trace_into_memory

SOURCES = ["cache", "graph", "popularity", "session", "vector"]


# -- the stores, in memory ------------------------------------------------------------------


class MemoryCache:
    """RedisCache's interface over dicts; ``down`` makes every call fail as Redis down does."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], bytes] = {}
        self.down = False
        self.breaker = CircuitBreaker("redis", 3, 60.0)

    def get_answer(self, user_id: str, field: str) -> Lookup:
        if self.down:
            return Lookup(None, "error", "error")
        raw = self.answers.get((user_id, field))
        return Lookup(raw, "hit") if raw is not None else Lookup(None, "miss")

    async def get_answer_async(self, user_id: str, field: str) -> Lookup:
        return self.get_answer(user_id, field)

    def session(self, user_id: str) -> Session:
        if self.down:
            return Session([], None, problem="error")
        return Session([], b"")

    def save(self, user_id: str, field: str, answer: bytes, *rest: Any) -> bool:
        if self.down:
            return False
        self.answers[(user_id, field)] = answer
        return True

    def get_last(self, user_id: str) -> bytes | None:
        return None


class Vector:
    def __init__(self) -> None:
        self.delay_s = 0.0

    def recommend(self, user_id: str, session: Any, complete: bool = False) -> SourceAnswer:
        time.sleep(self.delay_s)
        reason = Reason("milvus", "similar_to_messages", "close to your messages", 0.9)
        return SourceAnswer([Candidate("travel", 0.9, [reason])], knows_user=True)


class Graph:
    def __init__(self) -> None:
        self.error: Exception | None = None

    def recommend(self, user_id: str, session: Any) -> SourceAnswer:
        if self.error is not None:
            raise self.error
        reason = Reason("neo4j", "intent_match", "you talked about travel", 0.8)
        return SourceAnswer([Candidate("travel", 0.8, [reason])], knows_user=True)


class Popularity:
    def __init__(self) -> None:
        self.catalog = {
            "travel": CampaignInfo("travel", "Travel"),
            "food": CampaignInfo("food", "Food"),
        }

    def recommend(self, user_id: str) -> tuple[list[Candidate], UserRules]:
        return [
            Candidate("food", 1.0, [Reason("postgres", "popular", "popular", 1.0)])
        ], UserRules()


class Log:
    def __init__(self) -> None:
        self.rows = 0

    def add(self, user_id: str, answer: R.RecommendResponse) -> None:
        self.rows += len(answer.items)


def memory_core(breaker_failures: int = 3, timeout_s: float = 0.5) -> Recommender:
    """The real Recommender (recommend, compute, breakers, deadlines) over the stores above."""
    cfg = RecommenderSettings(
        breaker_failures=breaker_failures,
        breaker_reset_s=60.0,
        milvus_timeout_s=timeout_s,
        neo4j_timeout_s=timeout_s,
        postgres_timeout_s=timeout_s,
        grpc_workers=2,
    )
    core = Recommender.__new__(Recommender)
    core.settings = Settings(recommender=cfg)
    core.cfg = cfg
    core.cache = MemoryCache()  # type: ignore[assignment]
    core.milvus = Vector()  # type: ignore[assignment]
    core.neo4j = Graph()  # type: ignore[assignment]
    core.postgres = Popularity()  # type: ignore[assignment]
    core.candidates = Candidates(
        core.milvus, core.neo4j, core.postgres, cfg, on_breaker_change=note_breaker
    )
    core.requests = ThreadPoolExecutor(2)
    core.log = Log()  # type: ignore[assignment]
    core.answers = AnswerCache(core.cache, cfg, lambda: core.postgres.catalog)
    core.erased = ErasedUsers()
    return core


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def clean_otel(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with clean_tracing(monkeypatch):
        yield


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    """Tracing on, as the service turns it on (mpp.tracing), into memory."""
    return trace_into_memory(monkeypatch, "recommender")


@pytest.fixture
def core() -> Iterator[Recommender]:
    recommender = memory_core()
    yield recommender
    recommender.candidates.close()
    recommender.requests.shutdown(wait=False, cancel_futures=True)


def http(core: Recommender, tracing_on: bool = True, auth: bool = False) -> TestClient:
    settings = Settings(auth=AuthSettings(enabled=auth))
    return TestClient(create_app(settings, core, lambda: {"status": "ready"}, tracing=tracing_on))


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"service": "recommender", **labels}) or 0.0


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


# -- off by default, and the metrics ---------------------------------------------------------


def test_off_by_default_no_span_records_and_answers_are_the_same(core: Recommender) -> None:
    assert tracing.configure_tracing("recommender") is False
    assert SourceCall("cache").span.is_recording() is False
    assert trace.get_current_span().is_recording() is False
    client = http(core, tracing_on=False)
    assert client.get("/recommendations/u-4").json()["strategy"] == "personalized"
    assert client.get("/recommendations/u-4").json()["cached"] is True


def test_metrics_move_as_documented(core: Recommender) -> None:
    def snapshot() -> dict[str, float]:
        return {
            "hit": metric("mpp_cache_requests_total", outcome="hit"),
            "miss": metric("mpp_cache_requests_total", outcome="miss"),
            "cache_ok": metric("mpp_source_calls_total", source="cache", outcome="ok"),
            "vector_ok": metric("mpp_source_calls_total", source="vector", outcome="ok"),
            "session_ok": metric("mpp_source_calls_total", source="session", outcome="ok"),
            "vector_n": metric("mpp_source_duration_seconds_count", source="vector"),
            "http_200": metric("mpp_requests_total", api="http", method="Recommend", code="200"),
            "http_422": metric("mpp_requests_total", api="http", method="Recommend", code="422"),
            "http_n": metric("mpp_request_duration_seconds_count", api="http", method="Recommend"),
            "personalized": metric("mpp_recommender_answers_total", strategy="personalized"),
        }

    before = snapshot()
    client = http(core, tracing_on=False)
    for _ in range(3):
        assert client.get("/recommendations/u-5").status_code == 200
    assert client.get("/recommendations/not%20ok").status_code == 422
    # Probes are not API requests.
    assert client.get("/healthz").status_code == 200
    after = snapshot()
    moved = {k: after[k] - before[k] for k in before}
    assert moved == {
        "hit": 2,
        "miss": 1,
        "cache_ok": 3,
        "vector_ok": 1,
        "session_ok": 1,
        "vector_n": 1,
        "http_200": 3,
        "http_422": 1,
        "http_n": 4,
        "personalized": 1,
    }
    # What /metrics shows: the new names, each series with its service; the old names gone.
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    assert "mpp_recommender_cache" not in families
    assert "mpp_recommender_request_seconds" not in families
    for name in ("mpp_requests", "mpp_request_duration_seconds", "mpp_cache_requests"):
        assert families[name].samples
        assert {s.labels["service"] for s in families[name].samples} == {"recommender"}


def test_refusals_at_the_http_door_are_counted_with_their_code(core: Recommender) -> None:
    refused = metric("mpp_requests_total", api="http", method="Recommend", code="401")
    client = http(core, tracing_on=False, auth=True)
    assert client.get("/recommendations/u-6").status_code == 401
    assert metric("mpp_requests_total", api="http", method="Recommend", code="401") == refused + 1
