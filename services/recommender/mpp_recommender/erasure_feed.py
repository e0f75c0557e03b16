"""Every erasure, in every recommender process: each worker and each replica reads the whole
erasure topic itself (its partitions assigned, no consumer group, from their end), so that
what it keeps in process follows an erasure that another process was asked for.

The activity follower's consumer group hands each erasure to one process only, which removes
the user's keys from Redis (shared by all). What each process holds on its own is fed here:
the erasures it knows (``ErasedUsers``: later feedback and session messages stamped at or
before the erasure are ignored) and the answer it keeps for the PostgreSQL-down fallback
(``Recommender.note_erased`` drops it).

Partitions are looked up when the feed starts, and again while the topic is missing; a
partition added later is read from the next start. Nothing is committed: a restarted process
loads the erasure ledger (PostgreSQL) at start and reads on from the end.
"""

from __future__ import annotations

import json
import threading
import uuid

from confluent_kafka import OFFSET_END, Consumer, KafkaError, Message, TopicPartition

from mpp.codecs import decode, event_time
from mpp.kafka import BrokerHealth
from mpp.logs import get_logger
from mpp.v1 import feedback_pb2 as F
from mpp_recommender.core import Recommender

log = get_logger(__name__)
LOOKUP_TIMEOUT_S = 5.0


class ErasureFeed:
    """Reads the erasure topic on a thread and tells ``core`` of each erasure."""

    def __init__(self, core: Recommender) -> None:
        settings = core.settings
        self._core = core
        self._topic = settings.kafka.topics.erasure
        self._health = BrokerHealth()
        self._consumer = Consumer(
            {
                **settings.kafka.client_config(),
                # Never joins or commits: the partitions are assigned, not subscribed.
                "group.id": f"{settings.kafka.group_prefix}-erasure-feed-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "statistics.interval.ms": 5000,
                "stats_cb": lambda stats: self._health.on_stats(json.loads(stats)),
                "error_cb": self._health.on_error,
            }
        )
        self._stop = threading.Event()
        self._assigned = threading.Event()
        self._thread = threading.Thread(target=self._run, name="erasure-feed", daemon=True)
        self._missing: str | None = None
        self.erasures = 0

    @property
    def problem(self) -> str | None:
        """None while reading every partition of the topic; else why not."""
        kafka = self._health.problem()
        if kafka is not None:
            return kafka
        if self._assigned.is_set():
            return None
        return self._missing or "kafka: the erasure feed has no partitions yet"

    def start(self) -> ErasureFeed:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _assign(self) -> bool:
        """Assign every partition of the topic at its end; False while it cannot be."""
        try:
            meta = self._consumer.list_topics(self._topic, timeout=LOOKUP_TIMEOUT_S)
        except Exception as exc:
            self._missing = f"kafka: erasure topic not described ({exc})"[:300]
            return False
        topic = meta.topics.get(self._topic)
        if topic is None or topic.error is not None or not topic.partitions:
            self._missing = f"kafka: erasure topic {self._topic} has no partitions"
            return False
        self._consumer.assign(
            [TopicPartition(self._topic, p, OFFSET_END) for p in sorted(topic.partitions)]
        )
        self._assigned.set()
        log.info("erasure_feed_assigned", topic=self._topic, partitions=len(topic.partitions))
        return True

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if not self._assigned.is_set():
                    if not self._assign():
                        self._stop.wait(1.0)
                    continue
                batch = self._consumer.consume(100, timeout=0.1)
                if batch:
                    self.handle(batch)
        finally:
            self._consumer.close()

    def handle(self, batch: list[Message]) -> None:
        for msg in batch:
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("erasure_feed_error", error=error.str())
                continue
            try:
                request = decode(F.ErasureRequest, msg.value())
                # A time out of range is skipped, as the writers dead-letter it.
                event_time(request.requested_at, "requested_at")
            except Exception as exc:
                log.debug("erasure_record_skipped", error=str(exc))
                continue
            if request.user_id:
                self._core.note_erased(request.user_id, request.requested_at.ToMilliseconds())
                self.erasures += 1
