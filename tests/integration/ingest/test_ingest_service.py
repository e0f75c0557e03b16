"""The ingest service's loop on the real broker: validated out, dead letters with reasons."""

from __future__ import annotations

import json
import threading
import time

from confluent_kafka import Consumer, TopicPartition
from mpp_ingest.service import worker

from mpp.codecs import decode, encode
from mpp.config import Settings
from mpp.kafka import TrackedProducer
from mpp.service import build_loop
from mpp.v1 import events_pb2 as E


def read_all(settings: Settings, topic: str, expected: int, timeout_s: float = 30) -> list:  # type: ignore[type-arg]
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"reader-{topic}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    records = []
    deadline = time.monotonic() + timeout_s
    quiet_until = None
    while time.monotonic() < deadline:
        batch = consumer.consume(500, timeout=0.5)
        records.extend(m for m in batch if m.error() is None)
        if len(records) >= expected:
            # Keep reading a moment: more than expected must show up as a failure.
            quiet_until = quiet_until or time.monotonic() + 1.0
            if time.monotonic() > quiet_until:
                break
    consumer.close()
    return records


def run_ingest(settings: Settings, records: int, timeout_s: float = 60) -> None:
    """Run the service's loop until it has handled and committed ``records`` records."""
    loop = build_loop(settings, worker(settings))
    thread = threading.Thread(target=loop.run)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while loop.stats.records < records and time.monotonic() < deadline:
        time.sleep(0.1)
    loop.stop()
    thread.join(30)
    assert loop.stats.records == records


def test_ingest_routes_valid_duplicate_and_invalid_events(topic_settings: Settings) -> None:
    topics = topic_settings.kafka.topics
    producer = TrackedProducer(topic_settings.kafka, service="test")
    valid = [
        {
            "user_id": f"user-{i % 5}",
            "message": f"hello number {i}",
            "timestamp": f"2026-11-01T10:{i % 60:02d}:00Z",
        }
        for i in range(40)
    ]
    for event in valid:
        producer.produce(topics.raw, json.dumps(event).encode(), key=event["user_id"])
    for event in valid[:10]:  # duplicates: same event again
        producer.produce(topics.raw, json.dumps(event).encode(), key=event["user_id"])
    proto = E.RawConversationEvent(user_id="user-proto", message="via protobuf, mail x@y.org")
    proto.timestamp.FromMilliseconds(1_780_000_000_000)
    producer.produce(topics.raw, encode(proto), key="user-proto")
    invalid = {
        b"{broken": "ERROR_CODE_UNDECODABLE",
        json.dumps(
            {"user_id": "u", "message": "   ", "timestamp": 1_780_000_000_000}
        ).encode(): "ERROR_CODE_MESSAGE_EMPTY",
        json.dumps(
            {"user_id": "u", "message": "m", "timestamp": 1_780_000_000}
        ).encode(): "ERROR_CODE_TIMESTAMP_TOO_OLD",
        json.dumps(
            {"message": "m", "timestamp": 1_780_000_000_000}
        ).encode(): "ERROR_CODE_USER_ID_MISSING",
    }
    for value in invalid:
        producer.produce(topics.raw, value, key=b"bad", headers=[("source", b"test")])
    producer.flush()

    run_ingest(topic_settings, records=40 + 10 + 1 + len(invalid))
    validated = [
        decode(E.ValidatedMessage, m.value())
        for m in read_all(topic_settings, topics.validated, 41)
    ]
    ids = [v.message_id for v in validated]
    # Duplicates inside a batch are dropped; across batches the writers absorb them, so the
    # number of distinct ids is the contract.
    assert len(set(ids)) == 41
    by_user = {v.user_id: v for v in validated}
    assert by_user["user-proto"].text == "via protobuf, mail [email]"
    assert list(by_user["user-proto"].redactions) == ["email"]
    assert all(v.source.topic == topics.raw for v in validated)

    dead = [decode(E.DeadLetter, m.value()) for m in read_all(topic_settings, topics.dlq, 4)]
    assert len(dead) == 4
    got = {d.original_value: E.ErrorCode.Name(d.code) for d in dead}
    assert got == invalid
    reader = Consumer({**topic_settings.kafka.client_config(), "group.id": "dlq-check"})
    for d in dead:
        assert d.service == "ingest" and d.source.topic == topics.raw
        assert d.original_key == b"bad" and d.original_headers["source"] == "test"
        assert d.detail
        # The recorded position points at the original record.
        reader.assign([TopicPartition(d.source.topic, d.source.partition, d.source.offset)])
        (original,) = reader.consume(1, timeout=10)
        assert original.value() == d.original_value
    reader.close()
