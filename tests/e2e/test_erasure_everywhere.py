"""Erasure leaves nothing: a user talks through the running services, the batch path makes its
own copies, the user is erased, and then every store, every topic and every batch output is
searched for the user's id, message ids and words, and nothing is found.

The run has topics of its own with a short retention (``MPP_KAFKA__RETENTION_MS``, here 15 s:
the erasure deadline for Kafka, 24 h by default), a database and a SQLite warehouse of its own
(synced by the analytics service every second), and a batch data folder under the test's
tmp_path, filled by the embedding job in local Spark (the jobs' environment) and cleaned by
the batch erasure job (``jobs/mpp_jobs/erase.py``, the DAG's first task). Searched afterwards:
Milvus (by user and by message id), Neo4j (every property of every node and relationship),
PostgreSQL (every row of every table, as text), Redis (every key and every value), the
warehouse (its rows, and the bytes of its files), every topic (read from the beginning) and
every file of the batch folder (Parquet rows read back with Spark, text files as bytes). A
second user, not erased, is found in each of them: the search would see the erased one.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
import redis
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from mpp.config import Settings
from mpp.ids import derive_message_id
from mpp.kafka.testing import isolated_kafka
from mpp.pipeline import STREAMING, Pipeline, log
from mpp.stores import milvus_client, neo4j_driver, redis_client
from mpp.stores.milvus import milvus_string
from mpp.v1 import feedback_pb2 as F
from mpp.v1 import recommender_pb2 as R
from mpp.v1 import recommender_pb2_grpc as RG
from mpp.validation import normalize_text
from tests.conftest import with_database
from tests.e2e.pipeline import isolated_run

# Long enough for the services to read every record (the pipeline's lag), short for a test.
RETENTION_MS = 15_000
REPO = Path(__file__).resolve().parents[2]
DRIVER = str(REPO / "tests" / "e2e" / "batch_driver.py")


@pytest.fixture
def run(stack_settings: Settings, unique: str, tmp_path: Path) -> Iterator[Pipeline]:
    kafka = isolated_kafka(stack_settings.kafka, f"er-{unique}", retention_ms=RETENTION_MS)
    settings = stack_settings.model_copy(update={"kafka": kafka})
    try:
        with with_database(settings, unique) as db:
            extra_env = {
                "MPP_POSTGRES__DATABASE": db.postgres.database,
                "MPP_AUTH__ENABLED": "false",
                "MPP_WAREHOUSE__SQLITE_PATH": str(tmp_path / "warehouse.sqlite"),
                "MPP_ANALYTICS__WAREHOUSE_SYNC_S": "1",
                "MPP_KAFKA__RETENTION_MS": str(RETENTION_MS),
                "MPP_RECOMMENDER__MILVUS_TIMEOUT_S": "2",
                "MPP_RECOMMENDER__NEO4J_TIMEOUT_S": "2",
                "MPP_RECOMMENDER__POSTGRES_TIMEOUT_S": "2",
            }
            with isolated_run(db, unique, tmp_path, extra_env, campaigns=True) as pipeline:
                yield pipeline
    finally:
        AdminClient(kafka.client_config()).delete_topics(kafka.topics.all())


def raw_event(user: str, text: str, ts_ms: int, message_id: str | None = None) -> dict[str, object]:
    event: dict[str, object] = {"user_id": user, "message": text, "timestamp": ts_ms}
    if message_id:
        event["message_id"] = message_id
    return event


def jobs_env(run: Pipeline, tmp_path: Path) -> dict[str, str]:
    from mpp.stack import job_venvs as venvs

    pg = run.settings.postgres
    return venvs.job_env(
        {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", str(tmp_path)),
            "MPP_POSTGRES__HOST": pg.host,
            "MPP_POSTGRES__PORT": str(pg.port),
            "MPP_POSTGRES__USER": pg.user,
            "MPP_POSTGRES__DATABASE": pg.database,
            "MPP_WAREHOUSE__SQLITE_PATH": str(tmp_path / "warehouse.sqlite"),
            "MPP_LOG_LEVEL": "WARNING",
        }
    )


def jobs_python(argv: list[str], env: dict[str, str], timeout_s: float = 300) -> str:
    import subprocess

    from mpp.stack import job_venvs as venvs

    python = venvs.ensure_venv("jobs") / "bin" / "python"
    started = time.monotonic()
    result = subprocess.run(
        [str(python), *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s
    )
    log(
        f"jobs: {' '.join(argv[:2])}: exit {result.returncode} in {time.monotonic() - started:.1f}s"
    )
    assert result.returncode == 0, f"{argv}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result.stdout


def readable(settings: Settings, topic: str) -> int:
    consumer = Consumer({**settings.kafka.client_config(), "group.id": "erasure-probe"})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        total = 0
        for p in parts:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def topic_bytes(settings: Settings, topic: str) -> bytes:
    """Every key, value and header of the topic, read from the beginning."""
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"erasure-reader-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in parts
        }
        consumer.assign([TopicPartition(topic, p, low) for p, (low, _) in ends.items()])
        expected = sum(high - low for low, high in ends.values())
        out: list[bytes] = []
        seen = 0
        deadline = time.monotonic() + 15
        while seen < expected and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.5):
                if msg.error() is None:
                    seen += 1
                    key: Any = msg.key() or b""
                    out += [key if isinstance(key, bytes) else key.encode(), msg.value() or b""]
                    headers: Any = msg.headers() or []
                    out += [v or b"" for _, v in headers]
        return b"\n".join(out)
    finally:
        consumer.close()


def postgres_text(settings: Settings) -> str:
    """Every row of every table of the run's database, as text."""
    with psycopg.connect(settings.postgres.conninfo(), autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_type = 'BASE TABLE'"
            " AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        assert len(tables) > 5
        rows = []
        for schema, table in tables:
            query = f'SELECT t::text FROM "{schema}"."{table}" AS t'
            rows += [f"{table}: {r[0]}" for r in conn.execute(query.encode()).fetchall()]
    return "\n".join(rows)


def redis_bytes(client: redis.Redis) -> bytes:
    """Every key and every value in Redis (each type read as itself)."""

    def b(value: Any) -> bytes:
        return value if isinstance(value, bytes) else str(value).encode()

    out: list[bytes] = []
    for key in client.scan_iter(count=1000):
        out.append(b(key))
        kind = b(client.type(key)).decode()
        values: Any
        if kind == "string":
            values = [client.get(key)]
        elif kind == "hash":
            values = [x for pair in client.hgetall(key).items() for x in pair]
        elif kind == "list":
            values = client.lrange(key, 0, -1)
        elif kind == "set":
            values = client.smembers(key)
        elif kind == "zset":
            values = client.zrange(key, 0, -1)
        else:
            values = []
        out += [b(v) for v in values]
    return b"\n".join(out)


def neo4j_text(settings: Settings, needles: list[str]) -> dict[str, int]:
    with neo4j_driver(settings) as driver:
        found = {}
        for needle in needles:
            records, _, _ = driver.execute_query(
                """
                CALL () {
                  MATCH (n) WHERE any(k IN keys(n) WHERE
                    any(v IN CASE WHEN valueType(n[k]) STARTS WITH 'LIST' THEN n[k]
                                  ELSE [n[k]] END
                        WHERE toStringOrNull(v) CONTAINS $needle))
                  RETURN count(n) AS c
                  UNION ALL
                  MATCH ()-[r]->() WHERE any(k IN keys(r) WHERE
                    any(v IN CASE WHEN valueType(r[k]) STARTS WITH 'LIST' THEN r[k]
                                  ELSE [r[k]] END
                        WHERE toStringOrNull(v) CONTAINS $needle))
                  RETURN count(r) AS c
                }
                RETURN sum(c) AS hits
                """,
                needle=needle,
            )
            found[needle] = int(records[0]["hits"])
    return found


def milvus_rows(settings: Settings, user: str, message_ids: list[str]) -> list[dict[str, object]]:
    client = milvus_client(settings)
    expr = f"user_id == {milvus_string(user)}"
    if message_ids:
        expr += f" or message_id in [{', '.join(milvus_string(i) for i in message_ids)}]"
    return list(
        client.query(
            settings.milvus.messages_collection,
            filter=expr,
            output_fields=["message_id", "user_id"],
            consistency_level="Strong",
        )
    )


def warehouse_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")))


def warehouse_users(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {
            row[0]
            for table in ("message_facts", "feedback_facts", "user_engagement")
            for row in conn.execute(f"SELECT user_id FROM {table}")
        }


def eventually(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


@pytest.mark.timeout(1500)  # the first test of a fresh machine builds the jobs' environment
def test_an_erased_user_is_found_nowhere(run: Pipeline, tmp_path: Path) -> None:
    started = time.monotonic()
    run.start(*STREAMING, "analytics", "recommender")
    settings = run.settings
    erased, kept = f"{run.run_id}-erased", f"{run.run_id}-kept"
    words = f"zebrafinch{run.run_id}"  # the erased user's own words, found nowhere else
    kept_words = f"kingfisher{run.run_id}"
    producer_id = f"pid-{run.run_id}"
    now = int(time.time() * 1000)
    events = [
        raw_event(erased, f"I want cheap flights to Lisbon, {words} says hi", now - 600_000),
        raw_event(erased, f"book me a beach hotel in Greece {words}", now - 540_000),
        raw_event(
            erased, f"my {words} subscription to streaming movies", now - 480_000, producer_id
        ),
        raw_event(kept, f"pizza and sushi delivery tonight {kept_words}", now - 470_000),
    ]
    invalid = raw_event(erased, " \t ", now - 460_000)  # a dead letter with the user's id
    records = [json.dumps(e).encode() for e in [*events, invalid]]
    keys: list[bytes | None] = [str(e["user_id"]).encode() for e in [*events, invalid]]
    run.produce(records, keys)
    run.wait_drained(timeout_s=180)
    derived = [
        derive_message_id(erased, int(str(e["timestamp"])), normalize_text(str(e["message"])))
        for e in events[:2]
    ]
    message_ids = [*derived, producer_id]
    needles = [erased, words, *message_ids]
    log(f"streamed; needles {needles}")

    stub = RG.RecommenderStub(grpc.insecure_channel(f"127.0.0.1:{run.grpc_port}"))
    answer = stub.Recommend(R.RecommendRequest(user_id=erased, limit=3))
    assert answer.items
    feedback = F.FeedbackEvent(
        user_id=erased, campaign_id=answer.items[0].campaign_id, type=F.FEEDBACK_TYPE_CLICK
    )
    stub.RecordFeedback(R.RecordFeedbackRequest(feedback=feedback))
    stub.Recommend(R.RecommendRequest(user_id=kept, limit=3))
    warehouse = tmp_path / "warehouse.sqlite"
    eventually(
        lambda: warehouse.exists() and {erased, kept} <= warehouse_users(warehouse),
        60,
        "the warehouse sync",
    )

    # The batch path's copies: the raw events and the embedding job's Parquet.
    data = tmp_path / "batch"
    day = datetime.fromtimestamp(now / 1000 - 600, UTC).date()
    raw = data / "raw" / "conversations" / f"day={day}" / "events.jsonl"
    raw.parent.mkdir(parents=True)
    raw.write_text("\n".join(json.dumps(e) for e in [*events, invalid]) + "\n")
    env = jobs_env(run, tmp_path)
    end = day + timedelta(days=2)
    embed_args = [
        DRIVER, "embed", str(data), "--", "--input", str(raw.parent), "--output",
        str(data / "enriched-messages"), "--from", str(day - timedelta(days=1)), "--to", str(end),
        "--campaigns", "none", "--master", "local[2]", "--partitions", "2",
    ]  # fmt: skip
    embedded = json.loads(jobs_python(embed_args, env).strip().splitlines()[-1])
    assert embedded["summary"]["written"] == 4 and embedded["summary"]["rejected"] == 1
    before = json.dumps(embedded["rows"])
    # The batch path derived the stream's ids (the same key, from the same settings).
    assert all(i in before for i in message_ids) and kept in before

    # The erasure, through the front door.
    response = stub.ForgetUser(R.ForgetUserRequest(user_id=erased, reason="e2e"))
    assert {"postgres", "redis", "milvus", "neo4j"} <= set(response.erased_from)
    run.wait_drained(timeout_s=120)
    erase_args = [DRIVER, "erase", str(data), "--", "--data", str(data), "--warehouse"]
    erased_out = json.loads(jobs_python(erase_args, env).strip().splitlines()[-1])
    summary = erased_out["summary"]
    log(f"batch erasure: {summary}")
    assert summary["lines_removed"] and summary["rows_removed"]

    # Kafka: the retention takes every record of the run's topics within seconds.
    eventually(
        lambda: all(readable(settings, t) == 0 for t in settings.kafka.topics.all()),
        60,
        f"the topics' retention ({RETENTION_MS} ms)",
    )

    # -- the search ------------------------------------------------------------------------
    found: dict[str, list[str]] = {}

    def search(where: str, text: bytes | str) -> None:
        blob = text.encode() if isinstance(text, str) else text
        hits = [n for n in needles if n.encode() in blob]
        if hits:
            found[where] = hits

    assert milvus_rows(settings, erased, message_ids) == []
    assert [r["user_id"] for r in milvus_rows(settings, kept, [])] == [kept]
    graph = neo4j_text(settings, [*needles, kept_words])
    assert graph.pop(kept_words) > 0
    assert graph == dict.fromkeys(needles, 0), graph
    pg = postgres_text(settings)
    assert kept in pg
    search("postgresql", pg)
    cache = redis_bytes(redis_client(settings))
    search("redis", cache)
    assert kept.encode() in cache
    search("warehouse files", warehouse_bytes(warehouse))
    assert erased not in warehouse_users(warehouse) and kept in warehouse_users(warehouse)
    for topic in settings.kafka.topics.all():
        search(f"topic {topic}", topic_bytes(settings, topic))
    after = json.dumps(erased_out["rows"])
    assert kept in after
    search("batch parquet", after)
    for path in sorted(p for p in data.rglob("*") if p.is_file()):
        search(f"batch file {path.relative_to(data)}", path.read_bytes())
    assert found == {}, f"the erased user is still readable: {found}"
    log(f"erasure everywhere: {time.monotonic() - started:.0f}s")
