"""The recommender's real core over stores in memory, for the tests of its spans and metrics
(#16): the cache (which can be made to fail as Redis down does), the vector, graph and
popularity sources, the answer log; the fixtures that give a core and trace into memory, and
the test client and metric readers both test modules use."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient
from mpp_recommender.answers import AnswerCache
from mpp_recommender.blend import CampaignInfo, Candidate, Reason, UserRules
from mpp_recommender.breaker import CircuitBreaker
from mpp_recommender.cache import Lookup, Session
from mpp_recommender.candidates import Candidates
from mpp_recommender.core import Recommender
from mpp_recommender.erasure import ErasedUsers
from mpp_recommender.http_api import create_app
from mpp_recommender.sources import SourceAnswer
from mpp_recommender.telemetry import note_breaker
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from mpp.config import AuthSettings, RecommenderSettings, Settings
from mpp.v1 import recommender_pb2 as R
from tests.otel import clean_tracing, trace_into_memory

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
