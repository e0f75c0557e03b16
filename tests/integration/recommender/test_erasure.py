"""What the recommender keeps of a user, on the real servers: an erasure read by another
replica keeps older messages out of the session, ``forget_user`` leaves no trace in any
store, and the recommendation log keeps only its retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from mpp_recommender.activity import ActivityFollower
from mpp_recommender.core import Recommender
from mpp_recommender.recommendation_log import RecommendationLog
from mpp_recommender.sources import PostgresSource

from mpp.config import Settings
from mpp.erasure import record_erasure, user_hash
from mpp.kafka import TrackedProducer
from mpp.stores import redis_client
from mpp.stores.milvus import MilvusVectorStore
from mpp.stores.neo4j import Neo4jGraphStore
from mpp.v1 import feedback_pb2 as F
from tests.integration.stores.helpers import eventually

from .world import FOOD, TRAVEL, World, read_topic


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
