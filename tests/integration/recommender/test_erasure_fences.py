"""Fences: nothing written after an erasure brings the user back, whatever was in flight.

Against the real Redis and PostgreSQL (and Kafka for the recommender's feedback): the cache's
write-back of an answer computed before the erasure, session messages sent before it, the
recommendation log's queue flushed after it (and a log write racing the erasure's own
transaction), and feedback stamped before it, on the replica that erased and on another one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from mpp_recommender.cache import RedisCache, SessionMessage, erased_key, user_keys
from mpp_recommender.core import RecommendationLog, Recommender
from mpp_recommender.sources import PostgresSource

from mpp.config import Settings
from mpp.erasure import record_erasure
from mpp.stores import redis_client
from mpp.v1 import feedback_pb2 as F
from mpp.v1 import recommender_pb2 as R

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(database_settings: Settings, unique: str, tmp_path: Path) -> Settings:
    warehouse = database_settings.warehouse.model_copy(
        update={"sqlite_path": tmp_path / "warehouse.sqlite"}
    )
    milvus = database_settings.milvus.model_copy(
        update={"messages_collection": f"f_{unique}_m", "campaigns_collection": f"f_{unique}_c"}
    )
    return database_settings.model_copy(update={"warehouse": warehouse, "milvus": milvus})


@pytest.fixture
def cache(settings: Settings) -> Iterator[RedisCache]:
    cache = RedisCache(settings)
    yield cache
    cache.close()


def now_ms() -> int:
    return int(time.time() * 1000)


def sql(settings: Settings, statement: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(settings.postgres.conninfo(), autocommit=True) as conn:
        return conn.execute(statement.encode(), params).fetchall()


def test_an_answer_computed_before_an_erasure_is_not_written_back_to_the_cache(
    cache: RedisCache, settings: Settings, unique: str
) -> None:
    user = f"{unique}-cache"
    redis = redis_client(settings)
    session = cache.session(user)
    started = now_ms()  # the request starts computing...
    cache.delete_users([user])  # ...the user is erased meanwhile...
    stored = cache.save(
        user, "5", b"answer-of-" + user.encode(), session.head or b"", 60, None, started
    )
    assert stored is False  # ...and the answer it finishes with writes nothing back
    assert redis.exists(*user_keys(user)) == 0
    assert redis.exists(erased_key(user)) == 1
    # The marker is named by the keyed hash: no key shows the user's id.
    assert not [k for k in redis.scan_iter(match=f"*{user}*") if b"erased" in bytes(k)]
    # A request that starts after the erasure (the user came back) is cached as usual.
    time.sleep(0.005)
    assert cache.save(user, "5", b"fresh", b"", 60, None, now_ms()) is True
    assert redis.hget(user_keys(user)[0], "5") == b"fresh"
    redis.delete(*user_keys(user), erased_key(user))


def test_session_messages_sent_before_an_erasure_are_not_appended_after_it(
    cache: RedisCache, settings: Settings, unique: str
) -> None:
    user = f"{unique}-session"
    redis = redis_client(settings)
    sent_before = now_ms() - 1000
    cache.delete_users([user])

    def message(ts: int) -> SessionMessage:
        return SessionMessage(f"{user}-m{ts}", ts, np.ones(4, dtype=np.float32))

    assert cache.append_sessions({user: [message(sent_before)]}) == 0
    assert redis.exists(user_keys(user)[2]) == 0
    later = now_ms() + 10
    assert cache.append_sessions({user: [message(sent_before), message(later)]}) == 1
    entries: list[bytes] = redis.lrange(user_keys(user)[2], 0, -1)  # type: ignore[assignment]
    assert [SessionMessage.decode(e).ts_ms for e in entries] == [later]
    redis.delete(*user_keys(user), erased_key(user))


def _answer(user: str, at: datetime) -> R.RecommendResponse:
    answer = R.RecommendResponse(user_id=user, recommendation_id=f"r-{user}-{at.timestamp()}")
    answer.generated_at.FromDatetime(at)
    answer.items.append(R.Recommendation(campaign_id="c1", score=1.0))
    return answer


def test_recommendation_log_entries_queued_before_an_erasure_are_not_written_after_it(
    settings: Settings, unique: str
) -> None:
    user = f"{unique}-logged"
    postgres = PostgresSource(settings)
    log = RecommendationLog(postgres)
    try:
        served = datetime.now(UTC) - timedelta(seconds=1)
        with psycopg.connect(settings.postgres.conninfo()) as conn, conn.transaction():
            record_erasure(conn, user, "req-1", datetime.now(UTC))
            conn.execute("DELETE FROM recommendation_log WHERE user_id = %s", (user,))
        # Queued before the erasure, flushed after it.
        log.add(user, _answer(user, served))
        log.flush()
        assert sql(
            settings, "SELECT count(*) FROM recommendation_log WHERE user_id = %s", user
        ) == [(0,)]
        # What is served after the erasure (the user came back) is logged.
        log.add(user, _answer(user, datetime.now(UTC) + timedelta(seconds=1)))
        log.flush()
        assert sql(
            settings, "SELECT count(*) FROM recommendation_log WHERE user_id = %s", user
        ) == [(1,)]
    finally:
        log.close()
        postgres.pool.close()


def test_a_log_write_racing_the_erasure_waits_for_it_and_then_writes_nothing(
    settings: Settings, unique: str
) -> None:
    user = f"{unique}-racing"
    postgres = PostgresSource(settings)
    log = RecommendationLog(postgres)
    try:
        with psycopg.connect(settings.postgres.conninfo()) as conn:
            with conn.transaction():
                # The erasure's transaction holds the user's lock...
                record_erasure(conn, user, "req-2", datetime.now(UTC) + timedelta(seconds=5))
                log.add(user, _answer(user, datetime.now(UTC)))
                flushed = threading.Thread(target=log.flush)
                flushed.start()
                time.sleep(0.4)
                # ...so the log's write waits instead of committing before the DELETE below.
                assert flushed.is_alive()
                conn.execute("DELETE FROM recommendation_log WHERE user_id = %s", (user,))
            flushed.join(10)
        assert sql(
            settings, "SELECT count(*) FROM recommendation_log WHERE user_id = %s", user
        ) == [(0,)]
    finally:
        log.close()
        postgres.pool.close()


def _feedback(user: str, at_ms: int) -> F.FeedbackEvent:
    event = F.FeedbackEvent(user_id=user, campaign_id="c1", type=F.FEEDBACK_TYPE_CLICK)
    event.timestamp.FromMilliseconds(at_ms)
    return event


def _feedback_on_topic(settings: Settings, user: str) -> int:
    topic = settings.kafka.topics.feedback
    consumer = Consumer(
        {**settings.kafka.client_config(), "group.id": f"fence-{time.monotonic_ns()}"}
    )
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in parts
        }
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        found, seen = 0, 0
        deadline = time.monotonic() + 10
        while seen < sum(ends.values()) and time.monotonic() < deadline:
            for msg in consumer.consume(100, timeout=0.5):
                if msg.error() is None:
                    seen += 1
                    found += F.FeedbackEvent.FromString(msg.value() or b"").user_id == user
        return found
    finally:
        consumer.close()


def test_feedback_stamped_before_an_erasure_is_not_recorded_on_any_replica(
    settings: Settings, unique: str
) -> None:
    user = f"{unique}-feedback"
    before = now_ms() - 60_000
    erasing, other = Recommender(settings), Recommender(settings)
    try:
        response = erasing.forget_user(user)
        assert "postgres" in response.erased_from
        # The replica that erased knows: neither the topic nor the table gets it.
        erasing.record_feedback(_feedback(user, before))
        assert _feedback_on_topic(settings, user) == 0
        # Another replica has not read the erasure: the ledger's fence keeps it out of the
        # table (the topic's consumers drop it by the same ledger).
        other.record_feedback(_feedback(user, before + 1))
        count = "SELECT count(*) FROM recommender_feedback WHERE user_id = %s"
        assert sql(settings, count, user) == [(0,)]
        # Feedback after the erasure counts.
        time.sleep(0.01)
        other.record_feedback(_feedback(user, now_ms()))
        assert sql(settings, count, user) == [(1,)]
    finally:
        erasing.close()
        other.close()
        redis = redis_client(settings)
        redis.delete(erased_key(user))
