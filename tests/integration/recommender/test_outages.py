"""Outages on the real servers, each reached through a TCP forwarder the test can cut (the
shared stack's servers keep running for everyone else): no error while a store is away, the
degraded sources named, the fallbacks (popularity, the last answer, a static list)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from mpp_recommender.core import Recommender

from mpp.config import RecommenderSettings, Settings, host_port
from mpp.pipeline import log
from mpp.v1 import recommender_pb2 as R
from tests.forwarder import Cuttable
from tests.integration.stores.helpers import eventually

from .world import TRAVEL, World


@pytest.fixture
def bridges(world: World) -> Iterator[dict[str, Cuttable]]:
    s = world.settings
    made = {
        "redis": Cuttable(host_port(s.redis.url, 6379)),
        "neo4j": Cuttable(host_port(s.neo4j.uri, 7687)),
        "milvus": Cuttable(host_port(s.milvus.uri, 19530)),
        "postgres": Cuttable((s.postgres.host, s.postgres.port)),
    }
    yield made
    for bridge in made.values():
        bridge.cut()


def through(settings: Settings, bridges: dict[str, Cuttable]) -> Settings:
    """The same stores, reached through the bridges."""
    port = {name: b.port for name, b in bridges.items()}
    return settings.model_copy(
        update={
            "redis": settings.redis.model_copy(
                update={"url": f"redis://127.0.0.1:{port['redis']}/0"}
            ),
            "neo4j": settings.neo4j.model_copy(update={"uri": f"bolt://127.0.0.1:{port['neo4j']}"}),
            "milvus": settings.milvus.model_copy(
                update={"uri": f"http://127.0.0.1:{port['milvus']}"}
            ),
            "postgres": settings.postgres.model_copy(update={"port": port["postgres"]}),
        }
    )


@pytest.fixture
def bridged(world: World, bridges: dict[str, Cuttable]) -> Iterator[Recommender]:
    settings = through(world.settings, bridges)
    # The default deadlines: a store that hangs must cost a request no more than in production.
    defaults = RecommenderSettings()
    rec = settings.recommender.model_copy(
        update={
            f"{s}_timeout_s": getattr(defaults, f"{s}_timeout_s")
            for s in ("milvus", "neo4j", "postgres")
        }
    )
    recommender = Recommender(settings.model_copy(update={"recommender": rec}))
    recommender.start()
    yield recommender
    recommender.close()


class Load:
    """Threads asking for recommendations without pause; every answer and error is kept."""

    def __init__(self, core: Recommender, users: list[str], threads: int = 4) -> None:
        self.answers: list[tuple[float, R.RecommendResponse]] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._core = core
        self._users = users
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self._stop.is_set():
            user = rng.choice(self._users)
            try:
                if rng.random() < 0.3:
                    # A share of misses, so that the sources are asked all along.
                    self._core.cache.invalidate(user)
                answer = self._core.recommend(user, rng.randint(1, 10))
                self.answers.append((time.monotonic(), answer))
            except BaseException as exc:
                self.errors.append(exc)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def since(self, t: float) -> list[R.RecommendResponse]:
        return [a for at, a in list(self.answers) if at >= t]

    def wait_for(self, check: Callable[[R.RecommendResponse], bool], timeout_s: float) -> bool:
        start = time.monotonic()
        return eventually(lambda: any(check(a) for a in self.since(start)), timeout_s)


def expected_strategy(answer: R.RecommendResponse) -> str:
    """What the rules give a known user for the sources an answer names as degraded."""
    return "popularity" if {"milvus", "neo4j"} <= set(answer.degraded_sources) else "personalized"


def test_redis_then_neo4j_then_milvus_stopped_under_load_no_error_degraded_named(
    world: World, bridges: dict[str, Cuttable], bridged: Recommender
) -> None:
    users = [world.user(f"load{i}") for i in range(3)]
    for user in users:
        world.write(world.enriched(user, TRAVEL, 1_780_000_000_000))
    with Load(bridged, users) as load:
        assert load.wait_for(lambda a: a.strategy == "personalized" and not a.degraded_sources, 30)
        for store in ("redis", "neo4j", "milvus"):
            bridges[store].cut()
            cut_at = time.monotonic()
            assert load.wait_for(lambda a, s=store: s in a.degraded_sources, 15), (
                f"{store} cut, but no answer named it"
            )
            time.sleep(1.0)
            during = load.since(cut_at + 0.5)
            # Every answer while it is away names it (cache hits of earlier answers aside).
            fresh = [a for a in during if not a.cached]
            assert fresh and all(store in a.degraded_sources for a in fresh)
            assert all(a.items for a in during), [a for a in during if not a.items][:2]
            if store != "redis":
                # Milvus or Neo4j away: the rest answer, personalized. On two busy cores the
                # other one can also miss its deadline now and then; such an answer names both
                # and falls back to popularity, as the rules say.
                assert any(list(a.degraded_sources) == [store] for a in fresh)
                assert all(a.strategy == expected_strategy(a) for a in fresh), [
                    (a.strategy, list(a.degraded_sources))
                    for a in fresh
                    if a.strategy != expected_strategy(a)
                ][:3]
            bridges[store].restore()
            assert load.wait_for(lambda a: not a.degraded_sources and not a.cached, 60), (
                f"{store} restored, but answers stayed degraded"
            )
            log(f"{store}: {len(during)} answers while away, all naming it; recovered")
    assert load.errors == []
    assert len(load.answers) > 100


def test_fallbacks_popularity_then_last_answer_then_static(
    world: World, bridges: dict[str, Cuttable], bridged: Recommender
) -> None:
    user, stranger = world.user("known"), world.user("stranger")
    world.write(world.enriched(user, TRAVEL, 1_780_000_000_000))
    world.sql(
        "INSERT INTO campaign_performance (campaign_id, messages, impressions, clicks,"
        " conversions, ctr, conversion_rate) VALUES ('book-club', 5, 100, 30, 3, 0.3, 0.1)"
    )
    bridged.postgres.popular(force=True)
    good = bridged.recommend(user, 5)
    assert good.strategy == "personalized" and good.items[0].campaign_id == "travel-summer"

    # Everything but PostgreSQL away: popularity.
    for store in ("milvus", "neo4j"):
        bridges[store].cut()
    answers = [_miss(bridged, user) for _ in range(3)]
    assert all(a.strategy == "popularity" for a in answers)
    assert {"milvus", "neo4j"} <= set(answers[-1].degraded_sources)
    assert answers[-1].items[0].campaign_id == "book-club"
    assert answers[-1].items[0].reasons[0].kind == "popular"

    # PostgreSQL away too: the user's last answer computed with PostgreSQL up (the popularity
    # one, kept in Redis); a stranger gets the static list.
    bridges["postgres"].cut()
    last = _miss(bridged, user)
    assert last.strategy == "cached_fallback"
    assert "postgres" in last.degraded_sources
    assert [i.campaign_id for i in last.items] == [i.campaign_id for i in answers[-1].items]
    assert last.items[0].reasons[0].source == "cache"
    static = _miss(bridged, stranger)
    assert static.strategy == "static_fallback"
    assert static.items and static.items[0].reasons[0].source == "fallback"
    assert "winter-sale-2019" not in [i.campaign_id for i in static.items]

    # Redis away as well: the last answer from the process' own memory.
    bridges["redis"].cut()
    memory = _miss(bridged, user)
    assert memory.strategy == "cached_fallback" and "redis" in memory.degraded_sources

    for bridge in bridges.values():
        bridge.restore()
    assert eventually(lambda: _miss(bridged, user).strategy == "personalized", 60)


def _miss(core: Recommender, user: str) -> Any:
    core.cache.invalidate(user)
    return core.compute(user, 5)
