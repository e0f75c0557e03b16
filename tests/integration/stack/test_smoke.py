"""One real round trip per server of the local stack."""

from __future__ import annotations

import time
import uuid

import numpy as np
import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from neo4j.exceptions import ConstraintError
from pymilvus import DataType

from mpp.catalog import default_campaigns_path, parse_campaigns
from mpp.config import Settings
from mpp.db import available_migrations, migrate
from mpp.kafka import TrackedProducer
from mpp.stores import milvus_client, neo4j_driver, redis_client
from mpp.stores.campaigns import upsert_campaigns


def _create_topic(settings: Settings, name: str, partitions: int = 3) -> None:
    admin = AdminClient(settings.kafka.client_config())
    for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result(30)


def _consume(settings: Settings, topic: str, group: str, count: int) -> list:  # type: ignore[type-arg]
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    got = []
    deadline = time.monotonic() + 60
    while len(got) < count and time.monotonic() < deadline:
        for msg in consumer.consume(100, timeout=1.0):
            assert msg.error() is None, msg.error()
            got.append(msg)
            # Manual commit, record by record, only once it is handled.
            consumer.commit(message=msg, asynchronous=False)
    consumer.close()
    return got


def test_kafka_group_resumes_from_its_manual_commits(stack_settings: Settings, unique: str) -> None:
    topic = f"smoke.kafka.{unique}"
    _create_topic(stack_settings, topic)
    producer = TrackedProducer(stack_settings.kafka, service="test")
    for i in range(100):
        producer.produce(topic, value=f"v{i}".encode(), key=f"user-{i % 7}")
    producer.flush()

    first = _consume(stack_settings, topic, f"g-{unique}", 60)
    assert len(first) >= 60
    # Same key, same partition: a user's events keep their order.
    by_key: dict[bytes, set[int]] = {}
    for msg in first:
        by_key.setdefault(msg.key(), set()).add(msg.partition())
    assert all(len(parts) == 1 for parts in by_key.values())

    rest = _consume(stack_settings, topic, f"g-{unique}", 100 - len(first))
    values = sorted(m.value() for m in first + rest)
    assert values == sorted(f"v{i}".encode() for i in range(100))

    consumer = Consumer({**stack_settings.kafka.client_config(), "group.id": f"g-{unique}"})
    committed = consumer.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
    consumer.close()
    assert sum(tp.offset for tp in committed) == 100


def test_neo4j_uniqueness_constraint_and_idempotent_merge(
    stack_settings: Settings, unique: str
) -> None:
    label = f"Smoke{unique}"
    with neo4j_driver(stack_settings) as driver:
        driver.execute_query(
            f"CREATE CONSTRAINT smoke_{unique} IF NOT EXISTS FOR (n:{label}) REQUIRE n.id IS UNIQUE"
        )
        rows = [{"id": f"n{i}", "name": f"node {i}"} for i in range(500)]
        for _ in range(2):
            driver.execute_query(
                f"UNWIND $rows AS row MERGE (n:{label} {{id: row.id}}) SET n.name = row.name",
                rows=rows,
            )
        records, _, _ = driver.execute_query(f"MATCH (n:{label}) RETURN count(n) AS c")
        assert records[0]["c"] == 500
        with pytest.raises(ConstraintError):
            driver.execute_query(f"CREATE (:{label} {{id: 'n1'}})")
        driver.execute_query(f"MATCH (n:{label}) DETACH DELETE n")
        driver.execute_query(f"DROP CONSTRAINT smoke_{unique}")


def test_milvus_upsert_is_idempotent_and_search_finds_nearest(
    stack_settings: Settings, unique: str
) -> None:
    client = milvus_client(stack_settings)
    name = f"smoke_{unique}"
    schema = client.create_schema(auto_id=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=64)
    schema.add_field("user_id", DataType.VARCHAR, max_length=64)
    index = client.prepare_index_params()
    index.add_index("vector", index_type="FLAT", metric_type="COSINE")
    client.create_collection(name, schema=schema, index_params=index)
    try:
        vectors = np.random.default_rng(7).standard_normal((300, 64)).astype(np.float32)
        rows = [
            {"id": f"m{i}", "vector": v.tolist(), "user_id": f"u{i % 5}"}
            for i, v in enumerate(vectors)
        ]
        client.upsert(name, rows)
        client.upsert(name, rows)  # replay: same primary keys, no new rows
        # Milvus Lite makes a write visible a few milliseconds after the call returns.
        deadline = time.monotonic() + 5
        while True:
            count = client.query(name, filter="", output_fields=["count(*)"])[0]["count(*)"]
            if count >= 300 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert count == 300
        hits = client.search(name, data=[vectors[42].tolist()], limit=3, output_fields=["user_id"])[
            0
        ]
        assert hits[0]["id"] == "m42"
        assert hits[0]["entity"]["user_id"] == "u2"
        filtered = client.search(
            name, data=[vectors[42].tolist()], limit=3, filter='user_id == "u3"'
        )[0]
        assert filtered and all(int(h["id"][1:]) % 5 == 3 for h in filtered)
    finally:
        client.drop_collection(name)


def test_postgres_migrations_apply_once_and_catalog_upserts(stack_settings: Settings) -> None:
    database = f"mpp_smoke_{uuid.uuid4().hex[:8]}"
    admin = stack_settings.postgres.conninfo("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    try:
        conninfo = stack_settings.postgres.conninfo(database)
        applied = migrate(conninfo)
        assert applied == [m.name for m in available_migrations()]
        assert migrate(conninfo) == []
        campaigns = parse_campaigns(default_campaigns_path())
        with psycopg.connect(conninfo) as conn:
            upsert_campaigns(conn, campaigns)
            first = conn.execute("SELECT campaign_id, updated_at FROM campaigns").fetchall()
            upsert_campaigns(conn, campaigns)  # unchanged rows are not rewritten
            second = conn.execute("SELECT campaign_id, updated_at FROM campaigns").fetchall()
            assert len(first) == len(campaigns)
            assert sorted(first) == sorted(second)
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute("INSERT INTO campaigns (campaign_id, name) VALUES ('bad id!', 'x')")
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{database}" WITH (FORCE)')


def test_redis_set_get_with_ttl(stack_settings: Settings, unique: str) -> None:
    with redis_client(stack_settings) as client:
        key = f"smoke:{unique}"
        client.set(key, b"value", px=300)
        assert client.get(key) == b"value"
        assert 0 < client.pttl(key) <= 300
        time.sleep(0.5)
        assert client.get(key) is None
