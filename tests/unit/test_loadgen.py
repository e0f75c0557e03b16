"""The benches' load generator (bench/loadgen, Go) against its own trivial server: the counts
add up, the percentiles are ordered, and an answer counts as a hit only when it says so. No
server of the stack: the generator serves itself. The binary is built once and cached
(bench/load_generator.py); these runs take about a second each and assert no timing."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest

from bench.load_generator import Request, run, trivial_server
from mpp.v1 import recommender_pb2 as R

RECOMMEND = "/mpp.v1.Recommender/Recommend"
REQUESTS = [
    Request(RECOMMEND, R.RecommendRequest(user_id=f"u{i}", limit=10).SerializeToString())
    for i in range(20)
]
PATHS = [Request(f"/recommendations/u{i}?limit=10") for i in range(20)]


def answer(cached: bool) -> str:
    message = R.RecommendResponse(
        user_id="u1", cached=cached, items=[R.Recommendation(campaign_id="c1", score=0.5)]
    )
    return base64.b64encode(message.SerializeToString()).decode()


@pytest.fixture(scope="module")
def cached_server() -> Iterator[tuple[str, str]]:
    """Answers that say they came from the cache (its defaults)."""
    with trivial_server() as doors:
        yield doors


@pytest.fixture(scope="module")
def fresh_server() -> Iterator[tuple[str, str]]:
    """Answers computed anew: a RecommendResponse with cached false, JSON with "cached":false."""
    body = '-http-body={"user_id":"u1","cached":false,"items":[{"campaign_id":"c1"}]}'
    with trivial_server(body, f"-grpc-body={answer(False)}") as doors:
        yield doors


def assert_adds_up(result: dict[str, Any], concurrency: int) -> None:
    assert result["concurrency"] == concurrency
    assert result["requests"] > 0
    assert result["error_count"] == 0 and result["errors"] == {}
    assert result["ok"] == result["requests"]
    assert result["rps"] > 0 and result["seconds"] > 0
    latency = result["latency_ms"]
    order = [latency[k] for k in ("p50", "p90", "p99", "p99.9", "max")]
    assert order[0] > 0 and order == sorted(order)
    assert latency["mean"] <= latency["max"]


def test_http_counts_and_hits(cached_server: tuple[str, str]) -> None:
    http, _ = cached_server
    result = run(PATHS, "http", http, 4, 1.0, '-hit-bytes="cached":true', "-header=X-API-Key: k")
    assert_adds_up(result, 4)
    assert result["hits"] == result["ok"] and result["hit_rate"] == 1


def test_http_answer_without_the_pattern_is_no_hit(fresh_server: tuple[str, str]) -> None:
    http, _ = fresh_server
    result = run(PATHS, "http", http, 4, 1.0, '-hit-bytes="cached":true')
    assert_adds_up(result, 4)
    assert result["hits"] == 0 and result["hit_rate"] == 0


def test_grpc_counts_hits_by_the_cached_field(
    cached_server: tuple[str, str], fresh_server: tuple[str, str]
) -> None:
    checks = ("-hit-field=4", "-expect-field=2", "-header=authorization: Bearer k")
    hit = run(REQUESTS, "grpc", cached_server[1], 4, 1.0, *checks)
    miss = run(REQUESTS, "grpc", fresh_server[1], 4, 1.0, *checks, "-conns=2")
    assert_adds_up(hit, 4)
    assert_adds_up(miss, 4)
    assert hit["hits"] == hit["ok"] and hit["hit_rate"] == 1
    assert miss["hits"] == 0 and miss["connections"] == 2


def test_no_hit_count_unless_asked(cached_server: tuple[str, str]) -> None:
    result = run(REQUESTS, "grpc", cached_server[1], 2, 0.3)
    assert_adds_up(result, 2)
    assert result["hits"] is None and result["hit_rate"] is None


def test_an_answer_without_the_expected_field_is_an_error(cached_server: tuple[str, str]) -> None:
    result = run(REQUESTS, "grpc", cached_server[1], 2, 0.3, "-expect-field=9")
    assert result["ok"] == 0
    assert result["requests"] == result["error_count"] > 0
    assert set(result["errors"]) == {"unexpected_answer"}


def test_once_sends_each_request_once(cached_server: tuple[str, str]) -> None:
    """POST with a body per request (the Feast peer's shape); -once stops when all were sent."""
    bodies = [Request("/get-online-features", f'{{"user": "u{i}"}}'.encode()) for i in range(50)]
    result = run(bodies, "http", cached_server[0], 4, 60.0, "-once")
    assert result["requests"] == result["ok"] == 50
    assert result["exhausted"] is True


def test_unreachable_server_counts_transport_errors() -> None:
    with trivial_server() as (http, _):
        pass  # stopped: its port now refuses connections
    result = run(PATHS, "http", http, 2, 0.3)
    assert result["ok"] == 0 and result["requests"] == result["error_count"] > 0
    assert set(result["errors"]) == {"transport"}
    assert result["latency_ms"]["p50"] is None
