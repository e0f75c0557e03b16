"""Topics and consumer groups, as the operator and the monitors see them.

``ensure_topics`` creates the platform's topics and holds them to their retention (the
erasure deadline for Kafka); ``topic_sizes`` and ``LagReader`` (``group_lag``) read what the
topics hold and how far a consumer group is behind.
"""

from __future__ import annotations

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from mpp.config import KafkaSettings
from mpp.logs import get_logger

# The package's one logger name, as before it was split into modules.
log = get_logger("mpp.kafka")


def ensure_topics(settings: KafkaSettings, timeout_s: float = 30.0) -> list[str]:
    """Create the platform's topics that are missing, and hold every one of them to
    ``retention.ms`` = ``settings.retention_ms`` (``MPP_KAFKA__RETENTION_MS``): set at creation,
    and enforced on a topic that exists with another value (an incremental alter of that one
    config, leaving the topic's others alone). The retention is the erasure deadline for
    Kafka: a record, a dead letter included, is unreadable at most that long after it was
    produced. Returns the names created."""
    admin = AdminClient(settings.client_config())
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    retention = str(settings.retention_ms)
    wanted = [
        NewTopic(
            name,
            num_partitions=settings.topics.partitions,
            replication_factor=settings.topics.replication_factor,
            config={"retention.ms": retention},
        )
        for name in settings.topics.all()
        if name not in existing
    ]
    created = []
    if wanted:
        for name, future in admin.create_topics(wanted, request_timeout=timeout_s).items():
            try:
                future.result(timeout=timeout_s)
                created.append(name)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
    _enforce_retention(
        admin, [n for n in settings.topics.all() if n not in created], retention, timeout_s
    )
    return created


def _enforce_retention(
    admin: AdminClient, topics: list[str], retention: str, timeout_s: float
) -> list[str]:
    """Set ``retention.ms`` on those of ``topics`` whose value differs. Returns them."""
    if not topics:
        return []
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in topics]
    stale = []
    for resource, future in admin.describe_configs(resources, request_timeout=timeout_s).items():
        entry = future.result(timeout=timeout_s).get("retention.ms")
        if entry is None or entry.value != retention:
            stale.append(resource.name)
    if not stale:
        return []
    alters = [
        ConfigResource(
            ResourceType.TOPIC,
            name,
            incremental_configs=[
                ConfigEntry(
                    "retention.ms",
                    retention,
                    incremental_operation=AlterConfigOpType.SET,
                )
            ],
        )
        for name in stale
    ]
    for future in admin.incremental_alter_configs(alters, request_timeout=timeout_s).values():
        future.result(timeout=timeout_s)
    log.info("topic_retention_enforced", topics=stale, retention_ms=int(retention))
    return stale


def topic_sizes(settings: KafkaSettings, timeout_s: float = 10.0) -> dict[str, tuple[int, int]]:
    """For each platform topic that exists: (partitions, records between start and end)."""
    conf = {**settings.client_config(), "group.id": "mpp-topic-sizes", "enable.auto.commit": False}
    consumer = Consumer(conf)
    try:
        metadata = consumer.list_topics(timeout=timeout_s)
        sizes: dict[str, tuple[int, int]] = {}
        for name in settings.topics.all():
            topic = metadata.topics.get(name)
            if topic is None or topic.error is not None:
                continue
            records = 0
            for partition in topic.partitions:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(name, partition), timeout=timeout_s
                )
                records += high - low
            sizes[name] = (len(topic.partitions), records)
        return sizes
    finally:
        consumer.close()


def group_lag(settings: KafkaSettings, group: str, topic: str, timeout_s: float = 10.0) -> int:
    """Records on ``topic`` that consumer group ``group`` has not committed yet."""
    with LagReader(settings, timeout_s) as reader:
        return reader.lags({group: (group, topic)})[group]


class LagReader:
    """Consumer-group lag read again and again over one pair of connections.

    For monitors and drain checks that ask every fraction of a second: a new client per
    question costs the broker a connection, metadata and a group lookup each time.
    """

    def __init__(self, settings: KafkaSettings, timeout_s: float = 10.0) -> None:
        self.timeout_s = timeout_s
        conf = settings.client_config()
        self._admin = AdminClient(conf)
        self._consumer = Consumer(
            {**conf, "group.id": "mpp-lag-reader", "enable.auto.commit": False}
        )
        self._partitions: dict[str, list[int]] = {}

    def __enter__(self) -> LagReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._consumer.close()

    def _partitions_of(self, topic: str) -> list[int]:
        if topic not in self._partitions:
            metadata = self._consumer.list_topics(topic, timeout=self.timeout_s).topics[topic]
            if metadata.error is not None or not metadata.partitions:
                return []  # not created yet: nothing to lag behind, and nothing to cache
            self._partitions[topic] = sorted(metadata.partitions)
        return self._partitions[topic]

    def lags(self, watched: dict[str, tuple[str, str]]) -> dict[str, int]:
        """For each name -> (group, topic): records the group has not committed yet."""
        ends: dict[str, dict[int, tuple[int, int]]] = {}
        for _, topic in watched.values():
            if topic not in ends:
                ends[topic] = {
                    p: self._consumer.get_watermark_offsets(
                        TopicPartition(topic, p), timeout=self.timeout_s
                    )
                    for p in self._partitions_of(topic)
                }
        futures = {
            name: self._admin.list_consumer_group_offsets(
                [
                    ConsumerGroupTopicPartitions(
                        group, [TopicPartition(topic, p) for p in ends[topic]]
                    )
                ]
            )[group]
            for name, (group, topic) in watched.items()
            if ends[topic]
        }
        result = {name: 0 for name in watched}
        for name, future in futures.items():
            topic = watched[name][1]
            committed = future.result(timeout=self.timeout_s)
            for tp in committed.topic_partitions:
                low, high = ends[topic][tp.partition]
                result[name] += high - (tp.offset if tp.offset >= 0 else low)
        return result
