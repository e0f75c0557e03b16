"""Raw chat events to exact analytics, end to end: ingest, embedder and analytics as processes
on the real servers, feedback on the campaigns the embedder linked, a full replay, and the
warehouse synced by the service itself."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from mpp import analytics
from mpp.analytics import FeedbackFact, MessageFact
from mpp.config import Settings
from mpp.kafka import TrackedProducer, group_lag
from mpp.samples import chitchat_events
from mpp.v1 import feedback_pb2 as F
from mpp.warehouse.sqlite import SqliteWarehouse
from tests.e2e.pipeline import Pipeline, build_replay, isolated_run, log
from tests.integration.analytics.workload import KINDS, aggregates, recompute

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def pipeline(database_settings: Settings, unique: str, tmp_path: Path) -> Iterator[Pipeline]:
    extra_env = {
        "MPP_POSTGRES__DATABASE": database_settings.postgres.database,
        "MPP_ANALYTICS__WAREHOUSE_SYNC_S": "2",
        "MPP_WAREHOUSE__SQLITE_PATH": str(tmp_path / "warehouse.sqlite"),
    }
    with isolated_run(database_settings, unique, tmp_path, extra_env, campaigns=True) as run:
        yield run


def wait(what: str, done: Callable[[], bool], timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:.0f}s"
        time.sleep(0.5)


def facts(conn: psycopg.Connection[Any]) -> tuple[dict[str, MessageFact], dict[str, FeedbackFact]]:
    messages = {
        r["message_id"]: MessageFact(
            r["message_id"],
            r["user_id"],
            r["occurred_at"],
            r["channel"],
            tuple(r["intents"]),
            tuple(r["campaign_ids"]),
        )
        for r in analytics.read_table(conn, "message_facts")
    }
    feedback = {
        r["feedback_id"]: FeedbackFact(
            r["feedback_id"],
            r["user_id"],
            r["campaign_id"],
            r["kind"],
            r["occurred_at"],
            r["channel"],
            r["recommendation_id"],
        )
        for r in analytics.read_table(conn, "feedback_facts")
    }
    return messages, feedback


def count(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0


def test_raw_events_to_exact_analytics_replayed_and_warehoused(pipeline: Pipeline) -> None:
    settings = pipeline.settings
    replay = build_replay(
        list(chitchat_events(400)), pipeline.run_id, duplicate_share=0.1, invalid_share=0.02
    )
    pipeline.start("ingest", "embedder", "analytics")
    pipeline.produce(replay.records, replay.keys)
    conn = psycopg.connect(settings.postgres.conninfo(), autocommit=True)
    wait("message facts", lambda: count(conn, "message_facts") == replay.unique_valid)

    # Feedback, as the recommender's API sends it: impressions on the campaigns the embedder
    # linked, some clicks and conversions, every event sent twice.
    rng = random.Random(3)
    messages, _ = facts(conn)
    linked = [m for m in messages.values() if m.campaign_ids]
    assert linked, "the embedder linked no message to a campaign"
    events = []
    for i, m in enumerate(linked):
        for kind in ("impression", "click", "conversion")[: rng.randint(1, 3)]:
            event = F.FeedbackEvent(
                feedback_id=f"{pipeline.run_id}-f{i}-{kind}",
                user_id=m.user_id,
                campaign_id=m.campaign_ids[0],
                type=KINDS[kind],
                channel="web",
            )
            event.timestamp.FromDatetime(m.occurred_at)
            events.append(event)
    producer = TrackedProducer(settings.kafka, service="e2e")
    for event in events + events:
        producer.produce(settings.kafka.topics.feedback, event.SerializeToString(), event.user_id)
    producer.flush()
    wait("feedback facts", lambda: count(conn, "feedback_facts") == len(events))
    first = aggregates(conn)
    assert first == recompute(*facts(conn))
    assert len(first["user_engagement"]) == replay.users
    assert sum(r["messages"] for r in first["daily_activity"]) == replay.unique_valid
    log(
        f"analytics: {replay.unique_valid} messages, {len(linked)} linked to campaigns, "
        f"{len(events)} feedback events"
    )

    # The whole raw input again: ingest re-derives the same ids; nothing moves.
    pipeline.produce(replay.records, replay.keys)
    group = f"{settings.kafka.group_prefix}-analytics"
    wait(
        "the replay",
        lambda: (
            group_lag(
                settings.kafka,
                f"{settings.kafka.group_prefix}-embedder",
                settings.kafka.topics.validated,
            )
            == 0
            and group_lag(settings.kafka, group, settings.kafka.topics.enriched) == 0
        ),
    )
    assert aggregates(conn) == first

    # The service's own scheduled sync brings the SQLite warehouse to the same numbers.
    warehouse = SqliteWarehouse(Path(pipeline.env["MPP_WAREHOUSE__SQLITE_PATH"]))

    def synced() -> bool:
        try:
            return all(warehouse.read(t) == first[t] for t in first)
        except Exception:  # the file or its tables may not exist yet
            return False

    wait("the warehouse sync", synced, timeout_s=60)
    warehouse.close()
    conn.close()
