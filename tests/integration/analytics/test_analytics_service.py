"""The analytics service's whole loop on the real broker and PostgreSQL: facts, exact
aggregates, dead letters, commits, replays, erasure, and a 30 s PostgreSQL outage."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from mpp_analytics import service as analytics_service

from mpp import analytics
from mpp.config import Settings
from mpp.pipeline import free_port
from mpp.service import Worker, build_loop
from mpp.v1 import events_pb2 as E
from mpp.v1 import feedback_pb2 as F
from tests.forwarder import Cuttable
from tests.loops import committed, run_until

from .workload import aggregates, as_records, produce, recompute, workload

GARBAGE = b"\xff\xfe not a protobuf message"


@pytest.fixture
def settings(database_settings: Settings, unique: str) -> Settings:
    kafka = database_settings.kafka.model_copy(update={"group_prefix": f"test-{unique}"})
    return database_settings.model_copy(update={"kafka": kafka})


def run(
    worker: Worker, settings: Settings, until: Callable[[Any], bool], timeout_s: float = 90
) -> Any:
    loop = build_loop(settings, worker)
    run_until(loop, lambda: until(loop.stats), timeout_s=timeout_s)
    return loop.stats


def read_dead_letters(settings: Settings, expected: int) -> list[E.DeadLetter]:
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"dlq-reader-{settings.kafka.topics.dlq}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([settings.kafka.topics.dlq])
    got: list[E.DeadLetter] = []
    deadline = time.monotonic() + 30
    while len(got) < expected and time.monotonic() < deadline:
        for msg in consumer.consume(100, timeout=0.5):
            if msg.error() is None:
                got.append(E.DeadLetter.FromString(msg.value() or b""))
    consumer.close()
    return got


def pg(settings: Settings) -> psycopg.Connection[Any]:
    return psycopg.connect(settings.postgres.conninfo())


def without_erasures(records: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    return [r for r in records if r[0] != "erasure"]


def test_service_writes_exact_aggregates_dead_letters_replays_and_erases(
    settings: Settings, unique: str
) -> None:
    topics = settings.kafka.topics
    work = workload(unique, messages=200, erase=0)
    records = as_records(unique, work)
    bad_type = F.FeedbackEvent(feedback_id="f", user_id="u", campaign_id="c", type=9)
    bad_type.timestamp.GetCurrentTime()
    no_user = F.FeedbackEvent(feedback_id="f2", campaign_id="c", type=F.FEEDBACK_TYPE_CLICK)
    rejects = [
        ("enriched", GARBAGE),
        ("enriched", E.EnrichedMessage(model="no ids").SerializeToString()),
        ("feedback", bad_type.SerializeToString()),
        ("feedback", no_user.SerializeToString()),
    ]
    produce(settings, records + rejects)
    sent = len(records) + len(rejects)
    stats = run(analytics_service.worker(settings), settings, lambda s: s.records >= sent)
    assert stats.records == sent
    group = f"test-{unique}-analytics"
    assert (
        committed(settings.kafka, topics.enriched, group)
        + committed(settings.kafka, topics.feedback, group)
        == sent
    )
    expected = recompute(*work.final_facts())
    with pg(settings) as conn:
        first = aggregates(conn)
    assert first == expected

    dead = read_dead_letters(settings, 4)
    reasons = sorted((E.ErrorCode.Name(d.code), d.field) for d in dead)
    assert reasons == [
        ("ERROR_CODE_FIELD_INVALID", "type"),
        ("ERROR_CODE_SCHEMA_INVALID", "message.message_id"),
        ("ERROR_CODE_UNDECODABLE", ""),
        ("ERROR_CODE_USER_ID_MISSING", "user_id"),
    ]
    assert all(d.service == "analytics" for d in dead)
    assert GARBAGE in {d.original_value for d in dead}

    # A replay of everything by a new consumer group: the same aggregates.
    replay = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"group_prefix": f"replay-{unique}"})}
    )
    stats = run(analytics_service.worker(replay), replay, lambda s: s.records >= sent)
    with pg(settings) as conn:
        assert aggregates(conn) == first

    # Erasure from users.erasure: gone from facts and aggregates, recorded for the warehouse.
    victim = f"{unique}-u3"
    erased: list[int] = []
    produce(settings, [("erasure", F.ErasureRequest(user_id=victim).SerializeToString())])
    run(
        analytics_service.worker(settings, on_erasure=lambda: erased.append(1)),
        settings,
        lambda s: s.records >= 1,
    )
    assert erased == [1]
    messages, feedback = work.final_facts()
    messages = {k: v for k, v in messages.items() if v.user_id != victim}
    feedback = {k: v for k, v in feedback.items() if v.user_id != victim}
    with pg(settings) as conn:
        assert aggregates(conn) == recompute(messages, feedback)
        assert analytics.user_engagement(conn, victim) is None
        pending = conn.execute("SELECT user_id FROM analytics_pending_erasures").fetchall()
        assert pending == [(victim,)]
        after_erasure = aggregates(conn)

    # Everything replayed once more, by yet another group: the erasure stays final (the
    # ledger drops the victim's facts, all sent before the erasure).
    again = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"group_prefix": f"again-{unique}"})}
    )
    run(analytics_service.worker(again), again, lambda s: s.records >= sent + 1)
    with pg(settings) as conn:
        assert aggregates(conn) == after_erasure
        assert analytics.user_engagement(conn, victim) is None


def test_postgres_down_30s_mid_stream_loses_nothing_and_ends_exact(
    settings: Settings, unique: str
) -> None:
    topics = settings.kafka.topics
    group = f"test-{unique}-analytics"
    work = workload(unique, messages=240, erase=0)
    records = without_erasures(as_records(unique, work))
    half = len(records) // 2
    port = free_port()
    proxy = Cuttable((settings.postgres.host, settings.postgres.port), port)
    postgres = settings.postgres.model_copy(
        update={"host": "127.0.0.1", "port": port, "connect_timeout_s": 2}
    )
    behind = settings.model_copy(
        update={
            "postgres": postgres,
            "analytics": settings.analytics.model_copy(update={"batch_size": 50}),
        }
    )

    def total_committed() -> int:
        return committed(settings.kafka, topics.enriched, group) + committed(
            settings.kafka, topics.feedback, group
        )

    produce(settings, records[:half])
    timeline: dict[str, Any] = {}

    def until(stats: Any) -> bool:
        now = time.monotonic()
        if "cut" not in timeline and stats.records >= half:
            proxy.cut()
            timeline["cut"] = now
            timeline["committed_at_cut"] = total_committed()
            # The second half arrives while PostgreSQL is away.
            produce(settings, records[half:])
        elif "cut" in timeline and "restored" not in timeline and now - timeline["cut"] >= 30:
            timeline["committed_during_outage"] = total_committed()
            timeline["records_during_outage"] = stats.records
            timeline["retries"] = stats.retries
            proxy.restore()
            timeline["restored"] = now
        return "restored" in timeline and stats.records >= len(records)

    try:
        stats = run(analytics_service.worker(behind), behind, until, timeout_s=150)
    finally:
        proxy.cut()
    assert timeline["committed_at_cut"] == half
    # Down: batches refused and retried, nothing committed past the cut.
    assert timeline["retries"] >= 2
    assert timeline["committed_during_outage"] == half
    assert timeline["records_during_outage"] == half
    assert stats.records == len(records)
    assert total_committed() == len(records)
    with pg(settings) as conn:
        assert aggregates(conn) == recompute(*work.final_facts())
