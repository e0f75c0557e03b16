"""The parts the Recommender composes (mpp_recommender.candidates, answers, erasure), each
over stores in memory: what they answer and what they write. No server."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from mpp_recommender.answers import AnswerCache
from mpp_recommender.blend import CampaignInfo, Candidate, Reason, UserRules
from mpp_recommender.candidates import Candidates
from mpp_recommender.erasure import ErasedUsers, Eraser
from mpp_recommender.sources import SourceAnswer

import mpp.analytics
from mpp.config import RecommenderSettings, Settings

ROOT = Path(__file__).resolve().parents[2]
CATALOG = {
    "travel": CampaignInfo("travel", "Travel"),
    "food": CampaignInfo("food", "Food"),
    "over": CampaignInfo("over", "Over", ends_at=datetime(2020, 1, 1, tzinfo=UTC)),
}


# -- candidates and blend -------------------------------------------------------------------


def test_an_answer_names_only_live_campaigns_of_the_catalog_and_fills_up_to_the_limit() -> None:
    """Sources may propose campaigns the catalog does not hold (or no longer runs): the rules
    drop them, so every item of an answer is a catalog campaign and carries its name."""
    candidates = Candidates(
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        SimpleNamespace(catalog=CATALOG),  # type: ignore[arg-type]
        RecommenderSettings(),
    )
    try:
        unknown = Candidate("gone", 5.0, [Reason("milvus", "similar", "d", 5.0)])
        ended = Candidate("over", 4.0, [Reason("milvus", "similar", "d", 4.0)])
        travel = Candidate("travel", 1.0, [Reason("milvus", "similar", "d", 1.0)])
        milvus = SourceAnswer([unknown, ended, travel], knows_user=True)
        answer, read = candidates.answer(
            "u-1", ([], UserRules()), {"milvus": milvus, "neo4j": None}, 2, ["neo4j"]
        )
    finally:
        candidates.close()
    assert [(i.campaign_id, i.name) for i in answer.items] == [
        ("travel", "Travel"),
        ("food", "Food"),
    ]
    assert answer.items[1].reasons[0].kind == "catalog"
    assert answer.strategy == "personalized"
    assert list(answer.degraded_sources) == ["neo4j"]
    assert read is None


# -- cache use ------------------------------------------------------------------------------


class NoLastAnswer:
    """A Redis that keeps no answer (``get_last``) and takes every write."""

    def get_last(self, user_id: str) -> bytes | None:
        return None

    def save(self, *args: Any) -> bool:
        return True


def test_the_fallback_is_the_answer_kept_in_process_else_the_static_list() -> None:
    cfg = RecommenderSettings(fallback_campaigns=["food", "not-in-catalog"])
    answers = AnswerCache(NoLastAnswer(), cfg, lambda: CATALOG)  # type: ignore[arg-type]

    static = answers.fallback("u-1", 10, ["postgres"])
    assert static.strategy == "static_fallback"
    assert [(i.campaign_id, i.name) for i in static.items] == [
        ("food", "Food"),
        ("not-in-catalog", ""),
    ]
    assert list(static.degraded_sources) == ["postgres"]

    computed = answers.fallback("u-1", 10, [])
    computed.strategy = "personalized"
    session = SimpleNamespace(head=b"")
    answers.keep(computed, session, 10, "", "", None, 0, lambda user, ms: False)  # type: ignore[arg-type]
    last = answers.fallback("u-1", 1, ["postgres"])
    assert last.strategy == "cached_fallback"
    assert last.cached
    assert [i.campaign_id for i in last.items] == ["food"]
    assert last.items[0].reasons[0].kind == "last_answer"

    answers.forget("u-1")
    assert answers.fallback("u-1", 10, []).strategy == "static_fallback"


# -- erasure --------------------------------------------------------------------------------


class Connection:
    def __init__(self, statements: list[str]) -> None:
        self.statements = statements

    def execute(self, sql: str, params: Any = None) -> None:
        self.statements.append(" ".join(sql.split()))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        yield


class Postgres:
    def __init__(self) -> None:
        self.statements: list[str] = []
        self.pool = self

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        yield Connection(self.statements)


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def produce(self, topic: str, value: bytes, key: str) -> None:
        self.sent.append((topic, key))

    def flush(self, timeout: float) -> int:
        return 0


class Deleted:
    def __init__(self) -> None:
        self.users: list[str] = []
        self.store = self

    def delete_user(self, user_id: str) -> int:
        self.users.append(user_id)
        return 1

    def delete_users(self, user_ids: list[str]) -> int:
        self.users.extend(user_ids)
        return len(user_ids)


def test_the_analytics_library_ships_wherever_the_recommender_does() -> None:
    """Neither the wheel nor the images leave mpp.analytics out (only dev tooling), so the
    recommender always erases the analytics facts through it: core.py's branch for an
    install without it could never run (#15) and is gone."""
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())
    excluded = build["tool"]["hatch"]["build"]["targets"]["wheel"]["exclude"]
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for path in [*excluded, *ignored]:
        assert not "lib/mpp/analytics".startswith(path.rstrip("/") or "-"), path
    assert callable(mpp.analytics.erase_user)


def test_an_erasure_empties_the_recommenders_tables_and_leaves_the_facts_to_analytics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    erased_by_analytics: list[str] = []

    def erase_user(settings: Settings, user_id: str, **kwargs: Any) -> Any:
        erased_by_analytics.append(user_id)
        return SimpleNamespace(warehouse_pending=False)

    monkeypatch.setattr(mpp.analytics, "erase_user", erase_user)
    postgres, producer, cache, milvus, graph = (
        Postgres(),
        Producer(),
        Deleted(),
        Deleted(),
        Deleted(),
    )
    forgotten: list[str] = []
    erased = ErasedUsers()
    eraser = Eraser(
        settings=Settings(),
        producer=producer,  # type: ignore[arg-type]
        postgres=postgres,  # type: ignore[arg-type]
        cache=cache,  # type: ignore[arg-type]
        milvus=milvus,  # type: ignore[arg-type]
        graph=graph,  # type: ignore[arg-type]
        erased=erased,
        forget_answer=forgotten.append,
    )
    result = eraser.forget_user("u-1", reason="asked")

    assert list(result.erased_from) == ["postgres", "redis", "milvus", "neo4j", "warehouse"]
    assert not result.pending
    assert producer.sent == [(Settings().kafka.topics.erasure, "u-1")]
    assert erased_by_analytics == cache.users == milvus.users == graph.users == forgotten == ["u-1"]
    assert [s for s in postgres.statements if s.startswith("DELETE")] == [
        "DELETE FROM recommendation_log WHERE user_id = %s",
        "DELETE FROM recommender_feedback WHERE user_id = %s",
    ]
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    assert erased.is_erased("u-1", now_ms - 1000)
    assert not erased.is_erased("u-2", now_ms - 1000)
