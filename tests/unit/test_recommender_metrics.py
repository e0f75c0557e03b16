"""The recommender's metrics (#16) through its real front doors and core, with the stores in
memory: they move as documented, refusals at the HTTP door are counted, and tracing is off by
default with the same answers. The spans are in test_recommender_tracing.py."""

from __future__ import annotations

from mpp_recommender.core import Recommender
from mpp_recommender.telemetry import SourceCall
from opentelemetry import trace
from prometheus_client.parser import text_string_to_metric_families

from mpp import tracing

from .recommender_memory import clean_otel as clean_otel  # the autouse fixture
from .recommender_memory import core as core  # the fixture
from .recommender_memory import http, metric


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
