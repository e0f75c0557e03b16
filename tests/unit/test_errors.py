"""The shared error model (mpp.errors) and the Kafka testing helpers (mpp.kafka.testing), no
broker needed."""

from __future__ import annotations

import mpp.kafka
from mpp import errors
from mpp.config import KafkaSettings, Topics
from mpp.kafka.testing import ListSink, isolated_kafka, renamed_topics


def test_a_retryable_error_names_its_dependency_and_the_operation() -> None:
    exc = errors.RetryableError.of("milvus", "upsert_messages", ConnectionError("refused"))
    assert str(exc) == "milvus upsert_messages: refused"
    assert errors.retry_cause(exc) == "milvus"
    assert errors.retry_cause(errors.DeliveryError("1 record(s) not delivered")) == "kafka"


def test_the_kafka_package_raises_the_shared_classes() -> None:
    # ``except mpp.errors.RetryableError`` must catch what mpp.kafka's importers raise.
    assert mpp.kafka.RetryableError is errors.RetryableError
    assert mpp.kafka.RecordRefused is errors.RecordRefused
    assert mpp.kafka.DeliveryError is errors.DeliveryError
    assert mpp.kafka.retry_cause is errors.retry_cause
    assert issubclass(errors.RecordRefused, ValueError)  # never retryable


def test_renamed_topics_give_every_topic_the_suffix() -> None:
    topics = renamed_topics("t1")
    assert topics.all() == [f"{name}.t1" for name in Topics().all()]
    assert topics.partitions == Topics().partitions


def test_isolated_kafka_keeps_the_connection_and_sets_the_updates() -> None:
    base = KafkaSettings(bootstrap_servers="kafka:9092")
    kafka = isolated_kafka(base, "t2", create=False, retention_ms=5000)
    assert kafka.bootstrap_servers == "kafka:9092"
    assert kafka.retention_ms == 5000
    assert kafka.topics.raw == "conversations.raw.t2"
    assert base.topics.raw == "conversations.raw"


def test_a_list_sink_keeps_what_was_produced_by_topic() -> None:
    sink = ListSink()
    sink.produce("a", b"1", key="k")
    sink.produce("b", b"2")
    sink.produce("a", b"3")
    assert sink.on("a") == [(b"1", "k"), (b"3", None)]
    assert [topic for topic, _, _ in sink.records] == ["a", "b", "a"]
