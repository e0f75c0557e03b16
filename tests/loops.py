"""Running a BatchLoop in a test and reading what it committed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from confluent_kafka import Consumer, TopicPartition

from mpp.config import KafkaSettings
from mpp.kafka import BatchLoop


def committed(kafka: KafkaSettings, topic: str, group: str) -> int:
    """The sum of the group's committed offsets over all the topic's partitions."""
    consumer = Consumer({**kafka.client_config(), "group.id": group})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        offsets = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
    finally:
        consumer.close()
    return sum(max(tp.offset, 0) for tp in offsets)


def run_until(loop: BatchLoop, done: Callable[[], bool], timeout_s: float = 60) -> None:
    """Run the loop in a thread until ``done()``, then stop it; re-raise what it raised."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            loop.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.05)
    loop.stop()
    thread.join(30)
    assert not thread.is_alive(), "the loop did not stop within 30 s of stop()"
    if errors:
        raise errors[0]
    assert done(), "the loop did not get there in time"
