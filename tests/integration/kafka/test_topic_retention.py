"""Topic retention is the erasure deadline for Kafka (``mpp.kafka.ensure_topics``): every topic
gets ``retention.ms`` at creation, an existing topic with another value is brought back to it,
and on the local broker (retention checked every second) a record is gone within seconds of
a short retention."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from mpp.config import Settings
from mpp.kafka import TrackedProducer, ensure_topics
from mpp.kafka.testing import isolated_kafka
from mpp.pipeline import log

pytestmark = pytest.mark.integration


def retention(settings: Settings, topics: list[str]) -> dict[str, str]:
    admin = AdminClient(settings.kafka.client_config())
    resources = [ConfigResource(ResourceType.TOPIC, t) for t in topics]
    return {
        r.name: f.result(10)["retention.ms"].value
        for r, f in admin.describe_configs(resources).items()
    }


def listed(settings: Settings, topics: list[str]) -> bool:
    """Whether the broker's metadata lists every one of ``topics``."""
    admin = AdminClient(settings.kafka.client_config())
    return set(topics) <= set(admin.list_topics(timeout=10).topics)


def eventually(check: Callable[[], bool], timeout_s: float = 10) -> None:
    """The broker applies a config change within moments, not at once."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "the broker did not show the change"
        time.sleep(0.2)


def readable(settings: Settings, topic: str) -> int:
    """Records still readable on the topic (high watermark minus the log start offset)."""
    consumer = Consumer({**settings.kafka.client_config(), "group.id": "retention-probe"})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        total = 0
        for p in parts:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def test_topics_get_the_retention_at_creation_and_back_when_changed(
    stack_settings: Settings, unique: str
) -> None:
    kafka = isolated_kafka(stack_settings.kafka, f"ret-{unique}", create=False, retention_ms=3000)
    topics = kafka.topics
    settings = stack_settings.model_copy(update={"kafka": kafka})
    assert sorted(ensure_topics(kafka)) == sorted(topics.all())
    # CreateTopics answers when the controller has the topics; the broker's metadata may list
    # them a moment later (on a loaded machine, describing them at once got
    # UNKNOWN_TOPIC_OR_PART).
    eventually(lambda: listed(settings, topics.all()))
    assert set(retention(settings, topics.all()).values()) == {"3000"}

    # Someone sets another retention on one topic: the next ensure_topics puts it back.
    admin = AdminClient(kafka.client_config())
    resource = ConfigResource(
        ResourceType.TOPIC,
        topics.raw,
        incremental_configs=[
            ConfigEntry("retention.ms", "604800000", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(10)
    eventually(lambda: retention(settings, [topics.raw]) == {topics.raw: "604800000"})
    assert ensure_topics(kafka) == []
    eventually(lambda: retention(settings, topics.all()) == {t: "3000" for t in topics.all()})

    # Records go within seconds of the retention on the local broker.
    producer = TrackedProducer(kafka, service="retention-test")
    for i in range(5):
        producer.produce(topics.dlq, f"a user's words {i}".encode(), key=b"u")
    producer.flush()
    assert readable(settings, topics.dlq) == 5
    started = time.monotonic()
    while readable(settings, topics.dlq) and time.monotonic() - started < 20:
        time.sleep(0.5)
    assert readable(settings, topics.dlq) == 0, "records outlived the topic's retention"
    log(f"retention 3 s: records unreadable after {time.monotonic() - started:.1f} s")
    admin.delete_topics(topics.all())
