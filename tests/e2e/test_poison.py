"""Poison pills on every topic while normal events flow (issue #14's acceptance).

The five stream services run as processes on topics, consumer groups, a Milvus collection and
a PostgreSQL database of this test's own. Each kind of record a consumer cannot process is
produced onto each topic it can reach (raw, validated, enriched, feedback, erasure) between
real chat events: every service keeps its pid (none crashed), each poison record is in the DLQ
once per service that reads it, with its specific reason (none is left to the loop's generic
PROCESSING_FAILED), every consumer group's lag returns to 0, and the normal events land
exactly in Milvus, Neo4j and PostgreSQL.

On the code before #14 the vector-writer stopped on the embedding of another dimension (and
the services on an erasure out of range before its first slice), and ingest retried forever
the dead letter of the event near Kafka's size limit: the lag never reached 0.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from mpp.config import Settings
from mpp.kafka import LagReader, TrackedProducer
from mpp.samples import chitchat_events
from mpp.stores import milvus_client, neo4j_driver
from mpp.v1 import events_pb2 as E
from tests.e2e.pipeline import Pipeline, build_replay, isolated_run, log
from tests.e2e.poison_pills import feedback, poisons

pytestmark = pytest.mark.timeout(400)

SERVICES = ("ingest", "embedder", "vector-writer", "graph-writer", "analytics")
# Each service's input topics (Topics field names).
READS = {
    "ingest": ("raw",),
    "embedder": ("validated",),
    "vector-writer": ("enriched", "erasure"),
    "graph-writer": ("enriched", "erasure"),
    "analytics": ("enriched", "feedback", "erasure"),
}


@pytest.fixture
def pipeline(database_settings: Settings, unique: str, tmp_path: Path) -> Iterator[Pipeline]:
    extra_env = {
        "MPP_POSTGRES__DATABASE": database_settings.postgres.database,
        "MPP_WAREHOUSE__SQLITE_PATH": str(tmp_path / "warehouse.sqlite"),
        "MPP_ANALYTICS__WAREHOUSE_SYNC_ENABLED": "false",
    }
    # The campaigns make the embedder create the Milvus collections with the model's
    # dimension at start, as in a deployment.
    with isolated_run(database_settings, unique, tmp_path, extra_env, campaigns=True) as run:
        try:
            yield run
        finally:
            with neo4j_driver(run.settings) as driver:
                driver.execute_query(
                    "MATCH (u:User) WHERE u.id STARTS WITH $prefix "
                    "OPTIONAL MATCH (u)-[:SENT]->(m:Message) DETACH DELETE u, m",
                    prefix=f"poison-{unique}",
                )


def lags(pipeline: Pipeline, reader: LagReader) -> dict[str, int]:
    kafka = pipeline.settings.kafka
    watched = {
        f"{service}/{topic}": (f"{kafka.group_prefix}-{service}", getattr(kafka.topics, topic))
        for service, topics in READS.items()
        for topic in topics
    }
    return reader.lags(watched)


def milvus_users_count(pipeline: Pipeline, prefix: str) -> int:
    client = milvus_client(pipeline.settings)
    rows = client.query(
        pipeline.settings.milvus.messages_collection,
        filter=f'user_id like "{prefix}%"',
        output_fields=["count(*)"],
        consistency_level="Strong",
    )
    return int(rows[0]["count(*)"])


def test_poison_on_every_topic_never_stops_a_service(pipeline: Pipeline, unique: str) -> None:
    settings = pipeline.settings
    topics = settings.kafka.topics
    replay = build_replay(list(chitchat_events(300)), pipeline.run_id, 0.0, 0.0)
    valid_feedback = [feedback(f"{pipeline.run_id}-fb", i) for i in range(20)]
    pills = poisons(unique)
    pipeline.start(*SERVICES)
    pids = {name: pipeline.processes[name].owned_pid() for name in SERVICES}
    assert all(pids.values()), pids
    started = time.monotonic()

    # Normal events flow on raw (ingest -> embedder -> writers) while poison goes everywhere.
    producing = threading.Thread(
        target=pipeline.produce, args=(replay.records, replay.keys), kwargs={"rate": 150.0}
    )
    producing.start()
    producer = TrackedProducer(settings.kafka, service="e2e-poison")
    rng = random.Random(5)
    for pill in rng.sample(pills, len(pills)):
        time.sleep(0.05)
        producer.produce(getattr(topics, pill.topic), pill.value, key=b"poison")
    for event in valid_feedback:
        producer.produce(topics.feedback, event.SerializeToString(), key=event.user_id)
    producer.flush()
    producing.join()

    # Every group of every service drains its every input.
    expected_dead = sum(len(p.expected) for p in pills) + len(replay.invalid)
    with LagReader(settings.kafka) as reader:
        deadline = time.monotonic() + 240
        while True:
            lag = lags(pipeline, reader)
            if not any(lag.values()) and not any(lags(pipeline, reader).values()):
                break
            assert time.monotonic() < deadline, f"the lag did not return to 0: {lag}"
            time.sleep(0.5)
    log(f"drained in {time.monotonic() - started:.0f}s")

    # Nobody crashed or restarted.
    assert {name: pipeline.processes[name].owned_pid() for name in SERVICES} == pids

    # Each poison record is in the DLQ once per service that reads it, with its reason.
    dead = pipeline.dead_letters()
    limit = settings.kafka.dead_letter_max_bytes
    assert all(d.ByteSize() + len(d.original_key) <= limit for d in dead)
    by_origin: dict[tuple[str, str, bytes], list[E.DeadLetter]] = {}
    for d in dead:
        whole = (
            d.truncated.value_sha256
            if d.HasField("truncated")
            else hashlib.sha256(d.original_value).digest()
        )
        by_origin.setdefault((d.service, d.source.topic, whole), []).append(d)
    for pill in pills:
        topic = getattr(topics, pill.topic)
        digest = hashlib.sha256(pill.value).digest()
        for service, (code, field) in pill.expected.items():
            found = by_origin.get((service, topic, digest), [])
            got = [(E.ErrorCode.Name(d.code), d.field) for d in found]
            assert got == [(f"ERROR_CODE_{code}", field)], (pill.kind, pill.topic, service, got)
    oversized = [d for d in dead if d.HasField("truncated")]
    assert len(oversized) == 2 and all(d.source.offset >= 0 for d in oversized)
    codes = Counter(E.ErrorCode.Name(d.code) for d in dead)
    assert "ERROR_CODE_PROCESSING_FAILED" not in codes, codes
    assert len(dead) == expected_dead, codes

    # The normal events landed exactly.
    prefix = pipeline.run_id
    assert milvus_users_count(pipeline, prefix) == replay.unique_valid
    graph = pipeline.graph_counts()
    assert graph == {
        "users": replay.users,
        "messages": replay.unique_valid,
        "sent": replay.unique_valid,
    }
    with psycopg.connect(settings.postgres.conninfo()) as conn:
        messages = conn.execute(
            "SELECT count(*) FROM message_facts WHERE user_id LIKE %s", (prefix + "%",)
        ).fetchone()
        clicks = conn.execute(
            "SELECT count(*) FROM feedback_facts WHERE user_id LIKE %s", (prefix + "%",)
        ).fetchone()
    assert messages is not None and messages[0] == replay.unique_valid
    assert clicks is not None and clicks[0] == len(valid_feedback)
    log(
        f"{len(pills)} poison records, {len(dead)} dead letters, "
        f"{replay.unique_valid} messages landed; {time.monotonic() - started:.0f}s"
    )
