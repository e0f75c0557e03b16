"""Follows ``conversations.enriched`` and ``users.erasure`` to keep the cache fresh.

A background thread in the recommender's process, consumer group ``<prefix>-recommender``,
starting at the end of the topics (only new activity matters). For each batch:
- every new message is appended to its user's session in Redis and that user's cached answers
  are dropped, in one MULTI: the next request recomputes with the new message, without waiting
  for the vector-writer or the graph-writer;
- an erasure drops every key of the user, and later-read messages of that user sent before
  the erasure are ignored. With several replicas, another one may have read the erasure (the
  group splits the topics' partitions): the erasure ledger in PostgreSQL (``erased_users``,
  recorded by ForgetUser and by every writer) is asked about each batch's users too, so that
  no replica writes an erased user's in-flight message back into the shared session.

Offsets are committed automatically: this is a cache feed, and a lost record only means an
answer stays cached until its TTL. No record is skipped when a partition changes hands (several
replicas or workers joining the group one after the other): a partition the group has never
committed starts at its end as it is first assigned, and that end is committed at once, so
that the next owner goes on from there instead of from the end at its own later assignment
(a message produced in between would be read by neither); what an owner read is committed as
the partition is revoked.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict

import numpy as np
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from mpp.codecs import decode, event_time
from mpp.erasure import ErasureLedger
from mpp.kafka import BrokerHealth
from mpp.logs import get_logger
from mpp.v1 import events_pb2 as E
from mpp.v1 import feedback_pb2 as F
from mpp_recommender.cache import SessionMessage
from mpp_recommender.core import Recommender

log = get_logger(__name__)


def session_message(enriched: E.EnrichedMessage) -> SessionMessage:
    return SessionMessage(
        message_id=enriched.message.message_id,
        ts_ms=enriched.message.timestamp.ToMilliseconds(),
        embedding=np.array(enriched.embedding, dtype=np.float32),
        intents=tuple(
            (i.intent, float(i.score)) for i in enriched.intents if i.intent != "unknown"
        ),
        campaigns=tuple((c.campaign_id, float(c.score)) for c in enriched.campaigns),
    )


def pin_start_offsets(consumer: Consumer, partitions: list[TopicPartition]) -> None:
    """Commit the current end of each of ``partitions`` that the group has never committed:
    where this member starts ("latest"), and where the next owner goes on from if the
    partition moves before this member read anything."""
    if not partitions:
        return
    committed = consumer.committed(partitions, timeout=10)
    starts = [
        TopicPartition(
            tp.topic,
            tp.partition,
            consumer.get_watermark_offsets(tp, timeout=10, cached=False)[1],
        )
        for tp in committed
        if tp.offset < 0
    ]
    if starts:
        consumer.commit(offsets=starts, asynchronous=False)


class ActivityFollower:
    def __init__(self, core: Recommender) -> None:
        settings = core.settings
        self._core = core
        self._topics = settings.kafka.topics
        self._health = BrokerHealth()
        self._consumer = Consumer(
            {
                **settings.kafka.client_config(),
                "group.id": f"{settings.kafka.group_prefix}-recommender",
                "auto.offset.reset": "latest",
                "enable.auto.commit": True,
                "auto.commit.interval.ms": 1000,
                "partition.assignment.strategy": "cooperative-sticky",
                # Readiness: whether Kafka answers (mpp.kafka.BrokerHealth).
                "statistics.interval.ms": 5000,
                "stats_cb": lambda stats: self._health.on_stats(json.loads(stats)),
                "error_cb": self._health.on_error,
            }
        )
        self._ledger = ErasureLedger(settings)
        self._stop = threading.Event()
        self._assigned = threading.Event()
        self._thread = threading.Thread(target=self._run, name="activity", daemon=True)
        self.messages = 0
        self.erasures = 0

    @property
    def ready(self) -> bool:
        return self.problem is None

    @property
    def problem(self) -> str | None:
        """None while following; else why not (Kafka unreachable, no partitions yet)."""
        kafka = self._health.problem()
        if kafka is not None:
            return kafka
        return (
            None
            if self._assigned.is_set()
            else "kafka: the activity follower has no partitions yet"
        )

    def start(self) -> ActivityFollower:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            pin_start_offsets(consumer, partitions)
        except KafkaException as exc:
            # Only the hand-over guarantee is lost (auto.offset.reset applies as before).
            log.warning("activity_start_not_committed", error=str(exc)[:300])
        self._assigned.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:  # nothing read since the last commit
                log.warning("activity_offsets_not_committed", error=str(exc)[:300])

    def _run(self) -> None:
        self._consumer.subscribe(
            [self._topics.enriched, self._topics.erasure],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
        )
        try:
            while not self._stop.is_set():
                batch = self._consumer.consume(500, timeout=0.1)
                if not batch:
                    continue
                try:
                    self.handle(batch)
                except Exception as exc:
                    # A record it cannot read must not end the feed (the writers dead-letter it).
                    log.warning("activity_batch_skipped", records=len(batch), error=repr(exc)[:300])
        finally:
            self._consumer.close()
            self._ledger.close()

    def handle(self, batch: list[Message]) -> None:
        sessions: dict[str, list[SessionMessage]] = defaultdict(list)
        erased: list[str] = []
        for msg in batch:
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("activity_consumer_error", error=error.str())
                continue
            try:
                if msg.topic() == self._topics.erasure:
                    request = decode(F.ErasureRequest, msg.value())
                    if request.user_id:
                        # A time out of range is skipped, as the writers dead-letter it.
                        event_time(request.requested_at, "requested_at")
                        self._core.note_erased(
                            request.user_id, request.requested_at.ToMilliseconds()
                        )
                        erased.append(request.user_id)
                        sessions.pop(request.user_id, None)
                    continue
                enriched = decode(E.EnrichedMessage, msg.value())
                event_time(enriched.message.timestamp, "message.timestamp")
            except Exception as exc:
                # The writers dead-letter what they cannot read; here it is only skipped.
                log.debug("activity_record_skipped", error=str(exc))
                continue
            message = enriched.message
            if not message.user_id or not enriched.embedding:
                continue
            dimension = self._core.milvus.store.dimension
            if dimension is not None and len(enriched.embedding) != dimension:
                continue  # another model's vector: the vector-writer dead-letters it
            if self._core.is_erased(message.user_id, message.timestamp.ToMilliseconds()):
                continue
            sessions[message.user_id].append(session_message(enriched))
        if sessions:
            self._drop_erased_elsewhere(sessions)
        if sessions and self._core.milvus.store.dimension is None:
            # The first message tells the vectors' dimension: get Milvus ready off the
            # request path (the collections may not have existed when the service started).
            first = next(iter(sessions.values()))[0]
            try:
                self._core.milvus.prepare(len(first.embedding))
            except Exception as exc:
                log.warning("milvus_not_prepared", error=str(exc)[:300])
        try:
            if sessions:
                self._core.cache.append_sessions(sessions)
                self.messages += sum(len(v) for v in sessions.values())
            if erased:
                self._core.cache.delete_users(erased)
                self.erasures += len(erased)
        except Exception as exc:
            log.warning("activity_not_applied", users=len(sessions), error=str(exc))

    def _drop_erased_elsewhere(self, sessions: dict[str, list[SessionMessage]]) -> None:
        """Drop the messages of users erased by a request this replica did not read, sent at
        or before it. PostgreSQL away: only what this replica read is known (logged)."""
        try:
            erased = self._ledger.erased_at(sessions)
        except Exception as exc:
            log.warning("erasure_ledger_unavailable", error=str(exc)[:300])
            return
        for user_id, at in erased.items():
            at_ms = int(at.timestamp() * 1000)
            self._core.note_erased(user_id, at_ms)
            kept = [m for m in sessions[user_id] if m.ts_ms > at_ms]
            if kept:
                sessions[user_id] = kept
            else:
                del sessions[user_id]
