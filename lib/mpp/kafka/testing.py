"""Helpers for tests, benches and the dev tooling that run against a shared broker.

Many runs share one Kafka (the local stack's): each gives itself topics of its own, named
after a run-unique suffix, so that no run reads another's records.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from mpp.config import KafkaSettings, Topics
from mpp.kafka.admin import ensure_topics


def renamed_topics(suffix: str) -> Topics:
    """The platform's topics, each named ``<default name>.<suffix>``."""
    return Topics(
        **{
            name: f"{value}.{suffix}"
            for name, value in Topics().model_dump().items()
            if isinstance(value, str)
        }
    )


def isolated_kafka(
    kafka: KafkaSettings, suffix: str, *, create: bool = True, **update: Any
) -> KafkaSettings:
    """``kafka`` with topics of its own (``renamed_topics``), created unless ``create`` is
    False; ``update`` sets other fields too (``group_prefix``, ``retention_ms``)."""
    isolated = kafka.model_copy(update={"topics": renamed_topics(suffix), **update})
    if create:
        ensure_topics(isolated)
    return isolated


def drop_topics(kafka: KafkaSettings, topics: list[str] | None = None) -> None:
    """Deletes a run's own topics (those ``isolated_kafka`` made, or ``topics``), waiting for
    each; one never created is no error."""
    admin = AdminClient(kafka.client_config())  # alive until every deletion is done
    for future in admin.delete_topics(topics or kafka.topics.all()).values():
        try:
            future.result(30)
        except KafkaException as e:
            if e.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise


class ListSink:
    """An in-memory ``Sink``: what a handler produced, in order, for tests without a broker.

    ``records`` holds (topic, value, key) triples; nothing is ever refused or lost, so a
    handler's flush (the loop's) has nothing to report."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes, bytes | str | None]] = []

    def produce(self, topic: str, value: bytes, key: bytes | str | None = None) -> None:
        self.records.append((topic, value, key))

    def on(self, topic: str) -> list[tuple[bytes, bytes | str | None]]:
        """(value, key) of each record produced to ``topic``, in order."""
        return [(value, key) for t, value, key in self.records if t == topic]
