"""The recommender's core on the real servers: blended candidates with reasons, the rules,
cache-aside and freshness, feedback and erasure.

Each test has its own PostgreSQL database (the default catalog loaded), Kafka topics, Milvus
collections (the catalog's campaign vectors written) and user ids; Neo4j and Redis data are
keyed by those ids and removed afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer
from mpp_embedder.service import build_enricher
from mpp_recommender.activity import ActivityFollower
from mpp_recommender.checks import InvalidArgument
from mpp_recommender.core import Recommender
from mpp_recommender.recommendation_log import RecommendationLog
from mpp_recommender.sources import PostgresSource

from mpp.catalog import default_campaigns_path, parse_campaigns
from mpp.config import Settings
from mpp.embedding import Embedder
from mpp.erasure import record_erasure, user_hash
from mpp.intents import campaign_text
from mpp.kafka import TrackedProducer
from mpp.pipeline import log
from mpp.stores import redis_client
from mpp.stores.campaigns import upsert_campaigns
from mpp.stores.graph_rows import MessageNode
from mpp.stores.milvus import MilvusVectorStore
from mpp.stores.neo4j import Neo4jGraphStore
from mpp.stores.vector_rows import CampaignVector, MessageVector
from mpp.v1 import events_pb2 as E
from mpp.v1 import feedback_pb2 as F

from .test_vectors import drop_collections, eventually

TRAVEL = [
    "I'm flying to Lisbon next month and need a cheap hotel near the beach",
    "we want to book flights for our summer vacation abroad",
    "any tips for a beach holiday trip in Greece?",
]
FOOD = "I'm starving, let's order pizza and sushi for dinner tonight"


@dataclass
class World:
    settings: Settings
    tag: str
    embedder: Embedder

    def user(self, name: str) -> str:
        return f"{self.tag}-{name}"

    def enriched(self, user_id: str, texts: list[str], start_ms: int) -> list[E.EnrichedMessage]:
        """Messages as the embedder enriches them (the real model, intents and links)."""
        enricher = build_enricher(self.settings, self.embedder)
        enricher.linker.update(parse_campaigns(default_campaigns_path()))
        validated = []
        for i, text in enumerate(texts):
            message = E.ValidatedMessage(
                message_id=f"{user_id}-m{start_ms + i}", user_id=user_id, text=text, channel="chat"
            )
            message.timestamp.FromMilliseconds(start_ms + i * 1000)
            validated.append(message)
        return enricher.enrich(validated)

    def write(self, messages: list[E.EnrichedMessage]) -> None:
        """What the vector-writer and graph-writer would write."""
        store = MilvusVectorStore(self.settings)
        store.upsert_messages([MessageVector.from_enriched(m) for m in messages])
        graph = Neo4jGraphStore(self.settings)
        graph.merge_messages([MessageNode.from_enriched(m) for m in messages])
        graph.close()
        ids = {m.message.message_id for m in messages}
        user = messages[0].message.user_id
        assert eventually(
            lambda: ids <= {v.message_id for v in store.user_vectors(user, limit=100)}
        )
        store.close()

    def sql(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.settings.postgres.conninfo(), autocommit=True) as conn:
            cur = conn.execute(statement.encode(), params)
            return cur.fetchall() if cur.description else []


def recommender_settings(settings: Settings, unique: str, **recommender: Any) -> Settings:
    milvus = settings.milvus.model_copy(
        update={
            "messages_collection": f"t_{unique}_messages",
            "campaigns_collection": f"t_{unique}_campaigns",
        }
    )
    kafka = settings.kafka.model_copy(update={"group_prefix": f"test-{unique}"})
    # Correctness tests: generous deadlines, so that a machine busy with other work does not
    # turn a slow source into a degraded answer (the outage tests set the defaults back).
    timeouts = {f"{s}_timeout_s": 2.0 for s in ("milvus", "neo4j", "postgres")}
    rec = settings.recommender.model_copy(
        update={"breaker_reset_s": 0.5, **timeouts, **recommender}
    )
    return settings.model_copy(update={"milvus": milvus, "kafka": kafka, "recommender": rec})


def seed_catalog(settings: Settings, embedder: Embedder) -> None:
    """The default catalog in PostgreSQL, its vectors in Milvus (what the embedder writes)."""
    campaigns = parse_campaigns(default_campaigns_path())
    with psycopg.connect(settings.postgres.conninfo()) as conn:
        upsert_campaigns(conn, campaigns)
    vectors = embedder.encode([campaign_text(c) for c in campaigns])
    store = MilvusVectorStore(settings)
    store.upsert_campaigns(
        [
            CampaignVector(
                campaign_id=c.campaign_id,
                embedding=v,
                active=c.active,
                starts_at_ms=int(c.starts_at.timestamp() * 1000) if c.starts_at else 0,
                ends_at_ms=int(c.ends_at.timestamp() * 1000) if c.ends_at else 0,
            )
            for c, v in zip(campaigns, vectors, strict=True)
        ]
    )
    assert eventually(lambda: len(store.search_campaigns([1.0] * store.dimension, k=50)) > 0)  # type: ignore[operator]
    store.close()


def clean_up(settings: Settings, tag: str) -> None:
    drop_collections(settings)
    graph = Neo4jGraphStore(settings)
    graph._driver.execute_query(
        "MATCH (n) WHERE n.id STARTS WITH $tag DETACH DELETE n", tag=f"{tag}-"
    )
    graph.close()
    redis = redis_client(settings)
    keys = list(redis.scan_iter(match=f"mpp:*{tag}-*", count=1000))
    if keys:
        redis.delete(*keys)


@pytest.fixture
def world(database_settings: Settings, unique: str, embedder: Embedder) -> Iterator[World]:
    settings = recommender_settings(database_settings, unique)
    seed_catalog(settings, embedder)
    yield World(settings, unique, embedder)
    clean_up(settings, unique)


@pytest.fixture
def core(world: World) -> Iterator[Recommender]:
    recommender = Recommender(world.settings)
    recommender.start()
    yield recommender
    recommender.close()


def test_a_user_who_talks_about_travel_gets_the_travel_campaign_first_with_reasons(
    world: World, core: Recommender
) -> None:
    user = world.user("traveller")
    messages = world.enriched(user, TRAVEL, 1_780_000_000_000)
    world.write(messages)

    answer = core.recommend(user, 5)
    assert answer.strategy == "personalized"
    assert list(answer.degraded_sources) == []
    assert not answer.cached
    top = answer.items[0]
    assert top.campaign_id == "travel-summer"
    assert top.name == "Summer getaways"
    by_kind = {(r.source, r.kind): r for r in top.reasons}
    ids = {m.message.message_id for m in messages}
    similar = by_kind[("milvus", "similar_to_messages")]
    assert similar.message_id in ids and similar.score > 0.3
    intent = by_kind[("neo4j", "intent_match")]
    assert intent.intent == "travel" and intent.message_id in ids
    assert len(answer.items) == 5
    assert [i.score for i in answer.items] == sorted((i.score for i in answer.items), reverse=True)

    # A second request is a cache hit: the same answer.
    again = core.recommend(user, 5)
    assert again.cached and again.recommendation_id == answer.recommendation_id


def test_an_unknown_user_gets_the_popular_campaigns(world: World, core: Recommender) -> None:
    world.sql(
        "INSERT INTO campaign_performance (campaign_id, messages, impressions, clicks,"
        " conversions, ctr, conversion_rate) VALUES"
        " ('book-club', 10, 1000, 200, 40, 0.2, 0.2),"
        " ('job-board', 10, 1000, 50, 5, 0.05, 0.1),"
        " ('winter-sale-2019', 10, 1000, 900, 500, 0.9, 0.5)"
    )
    core.postgres.popular(force=True)
    answer = core.recommend(world.user("newcomer"), 3)
    assert answer.strategy == "cold_start"
    ids = [i.campaign_id for i in answer.items]
    # winter-sale-2019 ended in 2019: never recommended, however popular.
    assert ids[:2] == ["book-club", "job-board"]
    assert answer.items[0].reasons[0].source == "postgres"
    assert answer.items[0].reasons[0].kind == "popular"
    assert "200 clicks" in answer.items[0].reasons[0].detail
    assert "winter-sale-2019" not in ids


def test_conversions_dismissals_and_the_daily_cap_remove_campaigns(
    world: World, core: Recommender
) -> None:
    user = world.user("picky")
    world.write(world.enriched(user, [*TRAVEL, FOOD], 1_780_000_000_000))
    first = [i.campaign_id for i in core.recommend(user, 15).items]
    assert {"travel-summer", "food-delivery", "concert-tickets"} <= set(first)

    # Dismissal through the API: excluded at once (the cached answer is dropped).
    dismissal = F.FeedbackEvent(
        user_id=user, campaign_id="travel-summer", type=F.FEEDBACK_TYPE_DISMISSAL
    )
    feedback_id = core.record_feedback(dismissal)
    assert feedback_id.startswith("f-")
    # A conversion that only the analytics service recorded (feedback_facts).
    now = datetime.now(UTC)
    world.sql(
        "INSERT INTO feedback_facts (feedback_id, user_id, campaign_id, kind, occurred_at, day)"
        " VALUES ('f1', %s, 'food-delivery', 'conversion', %s, %s),"
        # concert-tickets has a daily cap of 2: two impressions today reach it.
        " ('f2', %s, 'concert-tickets', 'impression', %s, %s),"
        " ('f3', %s, 'concert-tickets', 'impression', %s, %s)",
        *([user, now, now.date()] * 3),
    )
    core.cache.invalidate(user)
    second = [i.campaign_id for i in core.recommend(user, 15).items]
    assert "travel-summer" not in second
    assert "food-delivery" not in second
    assert "concert-tickets" not in second
    assert second  # the rest are still there

    # Impressions through the API count at once, each feedback_id once: fitness-app (cap 2).
    impression = F.FeedbackEvent(
        user_id=user, campaign_id="fitness-app", type=F.FEEDBACK_TYPE_IMPRESSION
    )
    first_id = core.record_feedback(impression)
    # The analytics service recorded the same impression: still one.
    world.sql(
        "INSERT INTO feedback_facts (feedback_id, user_id, campaign_id, kind, occurred_at, day)"
        " VALUES (%s, %s, 'fitness-app', 'impression', %s, %s)",
        first_id,
        user,
        now,
        now.date(),
    )
    assert "fitness-app" in [i.campaign_id for i in core.recommend(user, 15).items]
    core.record_feedback(
        F.FeedbackEvent(user_id=user, campaign_id="fitness-app", type=F.FEEDBACK_TYPE_IMPRESSION)
    )
    assert "fitness-app" not in [i.campaign_id for i in core.recommend(user, 15).items]
    # Computed answers are logged (an audit record; cache hits add nothing).
    core.log.flush()
    logged = world.sql(
        "SELECT count(DISTINCT recommendation_id) FROM recommendation_log WHERE user_id = %s",
        user,
    )[0][0]
    assert logged == 4


def test_a_campaign_targeted_at_a_channel_and_locale_is_answered_only_there(
    world: World, core: Recommender
) -> None:
    user = world.user("targeted")
    world.write(world.enriched(user, TRAVEL, 1_780_000_000_000))
    assert core.recommend(user, 3, "chat", "en").items[0].campaign_id == "travel-summer"
    # The marketer restricts the campaign to e-mail in English (the catalog file's fields).
    campaigns = [
        c.model_copy(update={"channels": ["email"], "locales": ["en"]})
        if c.campaign_id == "travel-summer"
        else c
        for c in parse_campaigns(default_campaigns_path())
    ]
    with psycopg.connect(world.settings.postgres.conninfo()) as conn:
        upsert_campaigns(conn, campaigns)
    core.postgres.refresh_catalog(force=True)
    core.cache.invalidate(user)

    def ids(channel: str, locale: str) -> list[str]:
        return [i.campaign_id for i in core.recommend(user, 15, channel, locale).items]

    assert "travel-summer" not in ids("chat", "en")
    assert ids("email", "en-GB")[0] == "travel-summer"
    assert "travel-summer" not in ids("email", "fr")
    assert "travel-summer" not in ids("", "")
    # Each (limit, channel, locale) has its own cached answer: the e-mail one is not served
    # to chat, and a second e-mail request is a hit.
    assert core.recommend(user, 15, "email", "en-GB").cached
    assert "travel-summer" not in ids("chat", "en")
    with pytest.raises(InvalidArgument, match="channel"):
        core.recommend(user, 5, "In App!", "")
    with pytest.raises(InvalidArgument, match="locale"):
        core.recommend(user, 5, "", "english")


def test_a_new_message_on_the_enriched_topic_changes_the_answer_at_once(
    world: World, core: Recommender
) -> None:
    user = world.user("fresh")
    world.write(world.enriched(user, TRAVEL, 1_780_000_000_000))
    follower = ActivityFollower(core).start()
    try:
        assert eventually(lambda: follower.ready, timeout_s=30)
        before = core.recommend(user, 5)
        assert before.items[0].campaign_id == "travel-summer"
        assert core.recommend(user, 5).cached

        (new,) = world.enriched(user, [FOOD], 1_780_000_100_000)
        producer = TrackedProducer(world.settings.kafka, service="test")
        producer.produce(world.settings.kafka.topics.enriched, new.SerializeToString(), key=user)
        producer.flush()
        sent = time.monotonic()

        def changed() -> bool:
            answer = core.recommend(user, 5)
            return not answer.cached and any(
                r.message_id == new.message.message_id for i in answer.items for r in i.reasons
            )

        # The vector-writer has not run: the session in Redis alone carries the message.
        assert eventually(changed, timeout_s=10)
        elapsed = time.monotonic() - sent
        log(f"answer changed {elapsed * 1000:.0f} ms after the enriched message was produced")
        after = core.recommend(user, 5)
        food = next(i for i in after.items if i.campaign_id == "food-delivery")
        assert any(r.message_id == new.message.message_id for r in food.reasons)
    finally:
        follower.stop()


def test_a_user_erased_by_another_replica_gets_no_older_message_back_in_the_session(
    world: World, core: Recommender
) -> None:
    user = world.user("elsewhere")
    follower = ActivityFollower(core).start()
    try:
        assert eventually(lambda: follower.ready, timeout_s=30)
        # Another replica read the erasure: this one knows it only from the ledger.
        with psycopg.connect(world.settings.postgres.conninfo(), autocommit=True) as conn:
            record_erasure(conn, user, "req-elsewhere", datetime.fromtimestamp(1_780_000_050, UTC))
        assert not core.is_erased(user, 1_780_000_000_000)
        (old,) = world.enriched(user, [FOOD], 1_780_000_000_000)
        (new,) = world.enriched(user, [TRAVEL[0]], 1_780_000_100_000)
        producer = TrackedProducer(world.settings.kafka, service="test")
        for message in (old, new):
            producer.produce(
                world.settings.kafka.topics.enriched, message.SerializeToString(), key=user
            )
        producer.flush()

        def session_ids() -> list[str]:
            return [m.message_id for m in core.cache.session(user).messages]

        # Sent after the erasure, the new message is kept; the older one, in flight when the
        # user was erased, is not written back.
        assert eventually(lambda: session_ids() == [new.message.message_id], timeout_s=10)
        assert follower.messages == 1
        assert core.is_erased(user, 1_780_000_000_000)
    finally:
        follower.stop()


def test_invalid_input_names_the_field(core: Recommender) -> None:
    with pytest.raises(InvalidArgument) as bad_user:
        core.recommend("not a user id!", 5)
    assert bad_user.value.field == "user_id" and "letters, digits" in bad_user.value.message
    with pytest.raises(InvalidArgument) as bad_limit:
        core.recommend("u1", 500)
    assert bad_limit.value.field == "limit" and "1-100" in bad_limit.value.message
    with pytest.raises(InvalidArgument) as bad_type:
        core.record_feedback(F.FeedbackEvent(user_id="u1", campaign_id="c1"))
    assert bad_type.value.field == "feedback.type"
    with pytest.raises(InvalidArgument) as bad_campaign:
        core.record_feedback(
            F.FeedbackEvent(user_id="u1", campaign_id="no spaces", type=F.FEEDBACK_TYPE_CLICK)
        )
    assert bad_campaign.value.field == "feedback.campaign_id"


def read_topic(settings: Settings, topic: str, expected: int) -> list[Any]:
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"reader-{topic}-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    got: list[Any] = []
    deadline = time.monotonic() + 30
    while len(got) < expected and time.monotonic() < deadline:
        got += [m for m in consumer.consume(100, timeout=0.5) if m.error() is None]
    consumer.close()
    return got


def test_feedback_goes_to_the_feedback_topic_keyed_by_user(world: World, core: Recommender) -> None:
    user = world.user("clicker")
    event = F.FeedbackEvent(user_id=user, campaign_id="book-club", type=F.FEEDBACK_TYPE_CLICK)
    event.timestamp.FromMilliseconds(1_780_000_000_000)
    feedback_id = core.record_feedback(event)
    # The same feedback again gets the same id (the analytics service counts it once).
    again = F.FeedbackEvent(user_id=user, campaign_id="book-club", type=F.FEEDBACK_TYPE_CLICK)
    again.timestamp.FromMilliseconds(1_780_000_000_000)
    assert core.record_feedback(again) == feedback_id
    (first, _) = read_topic(world.settings, world.settings.kafka.topics.feedback, 2)
    assert first.key() == user.encode()
    published = F.FeedbackEvent.FromString(first.value())
    assert published.feedback_id == feedback_id and published.type == F.FEEDBACK_TYPE_CLICK


def tables_with_user_id(settings: Settings) -> list[str]:
    with psycopg.connect(settings.postgres.conninfo()) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.columns"
            " WHERE column_name = 'user_id' AND table_schema = 'public'"
        ).fetchall()
    return sorted(r[0] for r in rows)


def test_forget_user_leaves_no_trace_in_any_store(
    world: World, core: Recommender, tmp_path: Path
) -> None:
    user, other = world.user("leaving"), world.user("staying")
    warehouse = world.settings.warehouse.model_copy(
        update={"sqlite_path": tmp_path / "warehouse.sqlite"}
    )
    settings = world.settings.model_copy(update={"warehouse": warehouse})
    core.settings = settings
    for who in (user, other):
        world.write(world.enriched(who, TRAVEL, 1_780_000_000_000))
        core.recommend(who, 5)
        core.record_feedback(
            F.FeedbackEvent(user_id=who, campaign_id="book-club", type=F.FEEDBACK_TYPE_DISMISSAL)
        )
        now = datetime.now(UTC)
        world.sql(
            "INSERT INTO message_facts (message_id, user_id, occurred_at, day)"
            " VALUES (%s, %s, %s, %s)",
            f"{who}-fact",
            who,
            now,
            now.date(),
        )
        world.sql(
            "INSERT INTO feedback_facts (feedback_id, user_id, campaign_id, kind, occurred_at,"
            " day) VALUES (%s, %s, 'book-club', 'click', %s, %s)",
            f"{who}-fb",
            who,
            now,
            now.date(),
        )
        world.sql(
            "INSERT INTO user_engagement (user_id, messages, active_days, first_seen, last_seen)"
            " VALUES (%s, 1, 1, %s, %s)",
            who,
            now - timedelta(days=1),
            now,
        )
    core.log.flush()
    tables = tables_with_user_id(settings)
    assert {"recommendation_log", "message_facts", "feedback_facts", "user_engagement"} <= set(
        tables
    )

    result = core.forget_user(user, reason="user asked")
    assert set(result.erased_from) >= {"postgres", "redis", "milvus", "neo4j"}

    # Milvus
    store = MilvusVectorStore(settings)
    assert store.user_vectors(user) == []
    assert len(store.user_vectors(other)) == 3
    store.close()
    # Neo4j
    graph = Neo4jGraphStore(settings)
    assert graph.counts([user]).users == 0 and graph.counts([user]).messages == 0
    assert graph.counts([other]).messages == 3
    graph.close()
    # PostgreSQL: no table with a user_id column holds the user; the erasure record is a hash.
    for table in tables:
        count = world.sql(f"SELECT count(*) FROM {table} WHERE user_id = %s", user)[0][0]
        assert count == 0, f"{table} still holds the user"
    assert world.sql("SELECT count(*) FROM recommendation_log WHERE user_id = %s", other)[0][0]
    assert world.sql("SELECT user_hash FROM erased_users") == [(user_hash(user),)]
    # Redis
    redis = redis_client(settings)
    assert list(redis.scan_iter(match=f"*{user}*", count=1000)) == []
    # The warehouse (when the analytics library is there: it erases through it)
    if "warehouse" in result.erased_from:
        from mpp.warehouse import open_warehouse

        opened = open_warehouse(settings)
        for table in ("message_facts", "feedback_facts", "user_engagement"):
            assert all(row.get("user_id") != user for row in opened.read(table))
        opened.close()
    # The erasure is published for the writers and the analytics service.
    (record,) = read_topic(settings, settings.kafka.topics.erasure, 1)
    request = F.ErasureRequest.FromString(record.value())
    assert request.user_id == user and request.request_id == result.request_id
    # And the user is a stranger now.
    assert core.recommend(user, 5).strategy == "cold_start"


def test_recommendation_log_keeps_its_retention_and_prunes_in_chunks(
    database_settings: Settings,
) -> None:
    today = datetime.now(UTC).date()

    def insert(conn: psycopg.Connection[Any], tag: str, days_ago: list[int]) -> None:
        for i, ago in enumerate(days_ago):
            day = today - timedelta(days=ago)
            conn.execute(
                "INSERT INTO recommendation_log (recommendation_id, campaign_id, user_id,"
                " position, score, strategy, served_at, day) VALUES (%s, 'c', 'u', 0, 1,"
                " 'personalized', %s, %s)",
                (f"{tag}{i}", datetime(day.year, day.month, day.day, 12, tzinfo=UTC), day),
            )

    def kept(conn: psycopg.Connection[Any]) -> list[int]:
        rows = conn.execute("SELECT day FROM recommendation_log ORDER BY day").fetchall()
        return [(today - d).days for (d,) in rows]

    postgres = PostgresSource(database_settings)
    with psycopg.connect(database_settings.postgres.conninfo(), autocommit=True) as conn:
        insert(conn, "a", [10, 8, 7, 1, 0])
        # At start the log's thread deletes what is older than the retention: days before
        # today - 7.
        recommendation_log = RecommendationLog(postgres, retention_days=7, prune_every_s=3600)
        try:
            assert eventually(lambda: kept(conn) == [7, 1, 0], 10), kept(conn)
            # Many old rows go in chunks, until none is left.
            insert(conn, "b", [30, 20, 9, 9, 8])
            recommendation_log.PRUNE_CHUNK = 2
            assert recommendation_log.prune() == 5
            assert kept(conn) == [7, 1, 0]
        finally:
            recommendation_log.close()
        # Retention 0 keeps everything.
        insert(conn, "c", [400])
        forever = RecommendationLog(postgres, retention_days=0)
        try:
            assert forever.prune() == 0
            assert kept(conn) == [400, 7, 1, 0]
        finally:
            forever.close()
    postgres.close()
