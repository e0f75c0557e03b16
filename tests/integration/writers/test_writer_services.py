"""Both writers' whole loops on the real broker and stores: write, dead-letter, commit, erase."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Consumer, Message, TopicPartition
from mpp_graph_writer import service as graph_service
from mpp_vector_writer import service as vector_service

from mpp.config import Settings, host_port
from mpp.kafka import TrackedProducer
from mpp.kafka.testing import isolated_kafka
from mpp.pipeline import free_port
from mpp.service import Worker, build_loop
from mpp.stores.graph_rows import GraphCounts
from mpp.stores.milvus import MilvusVectorStore
from mpp.stores.neo4j import Neo4jGraphStore
from mpp.v1 import events_pb2 as E
from mpp.v1 import feedback_pb2 as F
from tests.forwarder import Cuttable
from tests.integration.stores.helpers import drop_collections, eventually, private_milvus
from tests.loops import committed, run_until

DIM = 384


@pytest.fixture
def settings(stack_settings: Settings, unique: str) -> Iterator[Settings]:
    """Topics and Milvus collections of this test's own; Neo4j data is tagged by ``unique``."""
    kafka = isolated_kafka(stack_settings.kafka, unique, group_prefix=f"test-{unique}")
    milvus = stack_settings.milvus.model_copy(
        update={
            "messages_collection": f"t_{unique}_messages",
            "campaigns_collection": f"t_{unique}_campaigns",
        }
    )
    writer = stack_settings.vector_writer.model_copy(update={"batch_size": 25})
    test_settings = stack_settings.model_copy(
        update={"kafka": kafka, "milvus": milvus, "vector_writer": writer, "graph_writer": writer}
    )
    yield test_settings
    drop_collections(test_settings)
    graph = Neo4jGraphStore(test_settings)
    graph._driver.execute_query(
        "MATCH (n) WHERE n.id STARTS WITH $tag OR n.name STARTS WITH $tag DETACH DELETE n",
        tag=f"{unique}-",
    )
    graph.close()


def enriched(tag: str, i: int, users: int, intent: str = "billing") -> E.EnrichedMessage:
    vector = np.random.default_rng(i).standard_normal(DIM).astype(np.float32)
    vector /= np.linalg.norm(vector)
    message = E.ValidatedMessage(
        message_id=f"{tag}-m{i}",
        user_id=f"{tag}-u{i % users}",
        text=f"message number {i}",
        channel="chat",
    )
    message.timestamp.FromMilliseconds(1_780_000_000_000 + i * 1000)
    return E.EnrichedMessage(
        message=message,
        embedding=vector.tolist(),
        model="test-model",
        dimension=DIM,
        intents=[
            E.IntentScore(intent=f"{tag}-{intent}", score=0.8),
            E.IntentScore(intent="unknown", score=0.1),
        ],
        campaigns=[
            E.CampaignLink(
                campaign_id=f"{tag}-c{i % 2}",
                score=0.6,
                source=E.CAMPAIGN_LINK_SOURCE_SIMILARITY,
            )
        ],
    )


def produce(settings: Settings, topic: str, values: list[bytes], key: str = "k") -> None:
    producer = TrackedProducer(settings.kafka, service="test")
    for value in values:
        producer.produce(topic, value, key=key)
    producer.flush()


def run(worker: Worker, settings: Settings, until: Callable[[int, int], bool]) -> tuple[int, int]:
    """Run the service's loop in a thread until ``until(records, retries)``."""
    loop = build_loop(settings, worker)
    run_until(loop, lambda: until(loop.stats.records, loop.stats.retries))
    return loop.stats.records, loop.stats.retries


def read_dead_letters(settings: Settings, expected: int) -> list[tuple[Message, E.DeadLetter]]:
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"dlq-reader-{settings.kafka.topics.dlq}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([settings.kafka.topics.dlq])
    got: list[tuple[Message, E.DeadLetter]] = []
    deadline = time.monotonic() + 30
    while len(got) < expected and time.monotonic() < deadline:
        for msg in consumer.consume(100, timeout=0.5):
            if msg.error() is None:
                got.append((msg, E.DeadLetter.FromString(msg.value() or b"")))
    consumer.close()
    return got


def original_record(settings: Settings, dead: E.DeadLetter) -> bytes | None:
    consumer = Consumer({**settings.kafka.client_config(), "group.id": "dlq-position-check"})
    try:
        source = dead.source
        consumer.assign([TopicPartition(source.topic, source.partition, source.offset)])
        (msg,) = consumer.consume(1, timeout=10)
        return msg.value()
    finally:
        consumer.close()


# The input every writer test sends: 60 messages of 6 users, 10 of them again with another
# intent (a replay after re-enrichment), a record that is no protobuf, one that has no ids.
GARBAGE = b"\xff\xfe this is not a protobuf message"


def send_messages(settings: Settings, tag: str) -> int:
    topics = settings.kafka.topics
    values = [enriched(tag, i, users=6).SerializeToString() for i in range(60)]
    values += [enriched(tag, i, users=6, intent="refund").SerializeToString() for i in range(10)]
    values += [GARBAGE, E.EnrichedMessage(model="no ids").SerializeToString()]
    produce(settings, topics.enriched, values)
    return len(values)


def check_dead_letters(settings: Settings, service: str) -> None:
    dead = read_dead_letters(settings, 2)
    assert len(dead) == 2
    by_code = {E.ErrorCode.Name(d.code): d for _, d in dead}
    assert set(by_code) == {"ERROR_CODE_UNDECODABLE", "ERROR_CODE_SCHEMA_INVALID"}
    garbage = by_code["ERROR_CODE_UNDECODABLE"]
    assert garbage.original_value == GARBAGE and garbage.original_key == b"k"
    assert garbage.service == service and garbage.source.topic == settings.kafka.topics.enriched
    assert "EnrichedMessage" in garbage.detail
    assert original_record(settings, garbage) == GARBAGE
    assert by_code["ERROR_CODE_SCHEMA_INVALID"].field == "message.message_id"


def test_vector_writer_upserts_dead_letters_commits_and_erases(
    settings: Settings, unique: str
) -> None:
    topics, group = settings.kafka.topics, f"test-{unique}-vector-writer"
    sent = send_messages(settings, unique)
    records, _ = run(vector_service.worker(settings), settings, lambda n, r: n >= sent)
    assert records == sent
    assert committed(settings.kafka, topics.enriched, group) == sent
    store = MilvusVectorStore(settings)
    assert eventually(lambda: store.count_messages() == 60)
    user0 = store.user_vectors(f"{unique}-u0", limit=50)
    assert len(user0) == 10
    # The replayed messages (m0, m6 of user 0) carry the later intent: the last write won.
    intents = {v.message_id: v.top_intent for v in user0}
    assert intents[f"{unique}-m0"] == intents[f"{unique}-m6"] == f"{unique}-refund"
    assert intents[f"{unique}-m12"] == f"{unique}-billing"
    check_dead_letters(settings, "vector-writer")

    # Erasure, read by the same group later: nothing else is read again.
    request = F.ErasureRequest(request_id="r1", user_id=f"{unique}-u0")
    produce(settings, topics.erasure, [request.SerializeToString()] * 2)
    records, _ = run(vector_service.worker(settings), settings, lambda n, r: n >= 2)
    assert records == 2
    assert store.user_vectors(f"{unique}-u0") == []
    assert store.count_messages() == 50
    assert committed(settings.kafka, topics.erasure, group) == 2


def test_graph_writer_merges_dead_letters_commits_and_erases(
    settings: Settings, unique: str
) -> None:
    topics, group = settings.kafka.topics, f"test-{unique}-graph-writer"
    users = [f"{unique}-u{i}" for i in range(6)]
    sent = send_messages(settings, unique)
    records, _ = run(graph_service.worker(settings), settings, lambda n, r: n >= sent)
    assert records == sent
    assert committed(settings.kafka, topics.enriched, group) == sent
    store = Neo4jGraphStore(settings)
    # One link per message; the 10 re-enriched messages moved from "billing" to "refund".
    assert store.counts(users) == GraphCounts(users=6, messages=60, about=60, has_intent=60)
    assert store.count_nodes("Intent", [f"{unique}-billing", f"{unique}-refund"]) == 2
    records_, _, _ = store._driver.execute_query(
        "MATCH (:Message)-[:HAS_INTENT]->(i:Intent {name: $name}) RETURN count(*) AS c",
        name=f"{unique}-refund",
    )
    assert records_[0]["c"] == 10
    check_dead_letters(settings, "graph-writer")

    produce(
        settings, topics.erasure, [F.ErasureRequest(user_id=f"{unique}-u0").SerializeToString()]
    )
    records, _ = run(graph_service.worker(settings), settings, lambda n, r: n >= 1)
    assert records == 1
    assert store.counts([f"{unique}-u0"]) == GraphCounts(0, 0, 0, 0)
    assert store.counts(users).messages == 50
    # Campaigns and intents are shared: they stay.
    assert store.count_nodes("Campaign", [f"{unique}-c0", f"{unique}-c1"]) == 2
    store.close()


@pytest.mark.parametrize("service", ["vector-writer", "graph-writer"])
def test_messages_sent_before_an_erasure_are_not_written_back(
    settings: Settings, unique: str, service: str
) -> None:
    """The erasure is handled first; the user's older messages, still in flight, arrive after."""
    import psycopg

    from mpp.erasure import user_hash

    topics = settings.kafka.topics
    user = f"{unique}-u0"
    module = vector_service if service == "vector-writer" else graph_service
    request = F.ErasureRequest(request_id=f"r-{unique}", user_id=user)
    # Messages m0..m9 are stamped 1_780_000_000_000 + i s: the erasure falls on m5's time.
    request.requested_at.FromMilliseconds(1_780_000_005_000)
    produce(settings, topics.erasure, [request.SerializeToString()])
    records, _ = run(module.worker(settings), settings, lambda n, r: n >= 1)
    assert records == 1
    with psycopg.connect(settings.postgres.conninfo()) as conn:
        row = conn.execute(
            "SELECT request_id, erased_at FROM erased_users WHERE user_hash = %s",
            (user_hash(user),),
        ).fetchone()
    assert row is not None and row[0] == f"r-{unique}"
    assert int(row[1].timestamp() * 1000) == 1_780_000_005_000

    produce(
        settings, topics.enriched, [enriched(unique, i, 1).SerializeToString() for i in range(10)]
    )
    records, _ = run(module.worker(settings), settings, lambda n, r: n >= 10)
    assert records == 10
    kept = {f"{unique}-m{i}" for i in range(6, 10)}
    if service == "vector-writer":
        store = MilvusVectorStore(settings)
        assert eventually(lambda: store.count_messages() == 4)
        assert {v.message_id for v in store.user_vectors(user, limit=50)} == kept
    else:
        graph = Neo4jGraphStore(settings)
        assert graph.counts([user]).messages == 4
        assert graph.count_nodes("Message", sorted(kept)) == 4
        graph.close()


def test_vector_writer_commits_nothing_while_milvus_is_down_then_catches_up(
    settings: Settings, unique: str, tmp_path: Path
) -> None:
    topics, group = settings.kafka.topics, f"test-{unique}-vector-writer"
    port = free_port()
    milvus = settings.milvus.model_copy(update={"uri": f"http://127.0.0.1:{port}"})
    down = settings.model_copy(update={"milvus": milvus})
    produce(down, topics.enriched, [enriched(unique, i, 3).SerializeToString() for i in range(30)])
    commits_during_outage: list[int] = []
    server: list[object] = []

    def until(records: int, retries: int) -> bool:
        if retries >= 2 and not server:
            # The batch was refused twice: nothing may be committed yet. Now start Milvus.
            commits_during_outage.append(committed(down.kafka, topics.enriched, group))
            context = private_milvus(tmp_path, port)
            context.__enter__()
            server.append(context)
        return records >= 30

    try:
        records, retries = run(vector_service.worker(down), down, until)
        assert commits_during_outage == [0]
        assert records == 30 and retries >= 2
        assert committed(down.kafka, topics.enriched, group) == 30
        store = MilvusVectorStore(down)
        assert eventually(lambda: store.count_messages() == 30)
    finally:
        for context in server:
            context.__exit__(None, None, None)  # type: ignore[attr-defined]


def test_graph_writer_commits_nothing_while_neo4j_is_away_then_catches_up(
    settings: Settings, unique: str
) -> None:
    topics, group = settings.kafka.topics, f"test-{unique}-graph-writer"
    port = free_port()
    neo4j = settings.neo4j.model_copy(
        update={"uri": f"bolt://127.0.0.1:{port}", "max_transaction_retry_time_s": 0.2}
    )
    away = settings.model_copy(update={"neo4j": neo4j})
    produce(away, topics.enriched, [enriched(unique, i, 3).SerializeToString() for i in range(5)])
    commits_during_outage: list[int] = []
    bridge: list[Cuttable] = []

    def until(records: int, retries: int) -> bool:
        if retries >= 2 and not bridge:
            # Refused twice, nothing committed; now let the writer reach the real Neo4j.
            commits_during_outage.append(committed(away.kafka, topics.enriched, group))
            host, target = host_port(settings.neo4j.uri, 7687)
            bridge.append(Cuttable((host, target), port))
        return records >= 5

    try:
        records, retries = run(graph_service.worker(away), away, until)
    finally:
        for forwarder in bridge:
            forwarder.close()
    assert commits_during_outage == [0]
    assert records == 5 and retries >= 2
    assert committed(away.kafka, topics.enriched, group) == 5
    store = Neo4jGraphStore(settings)
    assert store.counts([f"{unique}-u{i}" for i in range(3)]).messages == 5
    store.close()
