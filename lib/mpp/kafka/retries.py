"""The batch loop's recovery: retries with backoff, the poison-record safety net, commits.

``LoopRecovery`` is the part of ``mpp.kafka.loop.BatchLoop`` (whose doc states the contract)
that decides what becomes of a batch once its handler ran: a ``RETRYABLE`` failure is retried
with backoff while consumption is paused; any other failure has the batch halved until the
poison records are found and dead-lettered; a batch that succeeded is committed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from mpp.errors import DeliveryError, RetryableError, retry_cause
from mpp.kafka.producer import TrackedProducer
from mpp.logs import get_logger
from mpp.observability import (
    BATCH_DURATION,
    BATCH_RETRIES,
    BATCHES_BISECTED,
    COMMIT_FAILURES,
    RECORDS_CONSUMED,
)

# The package's one logger name, as before it was split into modules.
log = get_logger("mpp.kafka")

Handler = Callable[[list[Message]], None]
# Where the loop's safety net sends a record that made the handler raise (with the exception).
DeadLetterSink = Callable[[Message, Exception], None]


# What makes the loop retry a batch later: a store down, Kafka refusing, a record unacknowledged.
RETRYABLE = (RetryableError, KafkaException, DeliveryError)


def position(msg: Message) -> tuple[str, int, int]:
    """(topic, partition, offset) of a consumed record (never None for one without error)."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    if topic is None or partition is None or offset is None:
        raise ValueError("record without a position: only consumed records have one")
    return topic, partition, offset


@dataclass
class LoopStats:
    batches: int = 0
    records: int = 0
    retries: int = 0
    # Records the safety net dead-lettered (the handler raised on them).
    isolated: int = 0
    last_commit: dict[tuple[str, int], int] = field(default_factory=dict)


class LoopRecovery:
    """Retries, isolation and commits for ``BatchLoop`` (which sets these attributes)."""

    service: str
    batch_size: int
    max_wait_s: float
    producer: TrackedProducer | None
    max_backoff_s: float
    dead_letter: DeadLetterSink | None
    fatal: tuple[type[BaseException], ...]
    stats: LoopStats
    _stop: threading.Event
    _consumer: Consumer

    def _poll_batch(self, limit: int = 0, timeout_s: float | None = None) -> list[Message]:
        messages = self._consumer.consume(
            limit or self.batch_size, timeout=self.max_wait_s if timeout_s is None else timeout_s
        )
        batch = []
        for msg in messages:
            err = msg.error()
            if err is None:
                batch.append(msg)
            elif err.code() != KafkaError._PARTITION_EOF:
                if err.fatal():
                    raise KafkaException(err)
                log.warning("consumer_error", error=err.str())
        return batch

    def _flush(self) -> None:
        if self.producer is not None:
            self.producer.flush()

    # -- the safety net: poison records --------------------------------------------------------

    def _can_isolate(self, exc: BaseException) -> bool:
        return self.dead_letter is not None and not isinstance(exc, self.fatal)

    def _run_or_isolate(self, handler: Handler, batch: list[Message]) -> bool:
        """``handler(batch)`` and a flush, retried while a dependency is down; a record that
        makes it raise anything else is dead-lettered and the others processed. False when
        stopped while retrying (nothing of the batch is to be committed)."""

        def work() -> None:
            handler(batch)
            self._flush()

        try:
            return self._with_retries(work, batch)
        except Exception as exc:
            if isinstance(exc, RETRYABLE) or not self._can_isolate(exc):
                raise
            return self._isolate(handler, batch, exc)

    def _isolate(self, handler: Handler, batch: list[Message], failure: Exception) -> bool:
        """Find the records of ``batch`` that make ``handler`` raise ``failure`` (or another
        non-retryable error) by halving it; dead-letter those, process the others in order.
        A batch of n records with one poison costs about 2 log2(n) more handler calls.

        What the failed attempt produced is delivered (or dropped) first, so that a refusal
        of it is not blamed on the halves; the halves produce it again (at-least-once)."""
        try:
            self._flush()
        except Exception as exc:  # its outputs are made again below
            log.debug("flush_before_isolating_failed", error=str(exc)[:300])
        if len(batch) == 1:
            msg = batch[0]
            topic, partition, offset = position(msg)
            log.error(
                "record_failed",
                error=f"{type(failure).__name__}: {str(failure)[:500]}",
                topic=topic,
                partition=partition,
                offset=offset,
            )
            self.stats.isolated += 1
            sink = self.dead_letter
            assert sink is not None  # _can_isolate said so

            def send() -> None:
                sink(msg, failure)
                self._flush()

            return self._with_retries(send, batch)
        BATCHES_BISECTED.labels(self.service).inc()
        log.warning(
            "batch_failed_bisecting",
            error=f"{type(failure).__name__}: {str(failure)[:300]}",
            records=len(batch),
        )
        middle = len(batch) // 2
        return self._run_or_isolate(handler, batch[:middle]) and self._run_or_isolate(
            handler, batch[middle:]
        )

    def _with_retries(
        self, work: Callable[[], None], batch: list[Message], failure: Exception | None = None
    ) -> bool:
        """Run ``work`` until it succeeds, backing off (consumption paused) while it raises a
        retryable error; ``failure`` is a first attempt's error. False when asked to stop
        meanwhile: the batch is left uncommitted, to be read again after the restart."""
        backoff = 0.5
        while True:
            if failure is None:
                try:
                    work()
                    return True
                except RETRYABLE as exc:
                    failure = exc
            if self._stop.is_set():
                # Asked to stop while a store is down: leave without committing; the batch is
                # read again after the restart.
                log.warning("stopped_during_retry", error=str(failure), records=len(batch))
                return False
            self.stats.retries += 1
            BATCH_RETRIES.labels(self.service, retry_cause(failure)).inc()
            log.warning("batch_retry", error=str(failure), records=len(batch), backoff_s=backoff)
            self._wait_paused(backoff)
            backoff = min(backoff * 2, self.max_backoff_s)
            failure = None

    def _committed(self, batch: list[Message], started: float) -> None:
        """Commit a batch whose writes succeeded; count it."""
        for topic, count in self._commit(batch).items():
            RECORDS_CONSUMED.labels(self.service, topic).inc(count)
        self.stats.batches += 1
        self.stats.records += len(batch)
        elapsed = time.perf_counter() - started
        BATCH_DURATION.labels(self.service).observe(elapsed)
        log.info("batch_committed", records=len(batch), ms=round(elapsed * 1000, 1))

    def _wait_paused(self, seconds: float) -> None:
        """Back off without leaving the group: pause, keep polling, resume."""
        assignment = self._consumer.assignment()
        self._consumer.pause(assignment)
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and not self._stop.is_set():
                # Paused partitions return nothing; polling serves heartbeats and rebalances.
                for msg in self._consumer.consume(1, timeout=min(0.2, seconds)):
                    if msg.error() is None:
                        # A partition assigned during the pause is not paused: rewind it so
                        # that the record is read again later, and pause it too.
                        tp = TopicPartition(*position(msg))
                        self._consumer.seek(tp)
                        self._consumer.pause([tp])
        finally:
            self._consumer.resume(self._consumer.assignment())

    def _commit(self, batch: list[Message]) -> dict[str, int]:
        """Commit the batch's offsets (the handler has written it); records per topic.

        Asynchronous: the next batch is read while the broker stores the offsets, and
        ``close`` waits for commits still in flight. A commit lost to a crash or a rebalance
        has its records read again, which the idempotent writes make harmless.
        """
        offsets: dict[tuple[str, int], int] = {}
        counts: dict[str, int] = {}
        for msg in batch:
            topic, partition, offset = position(msg)
            key = (topic, partition)
            offsets[key] = max(offsets.get(key, -1), offset + 1)
            counts[topic] = counts.get(topic, 0) + 1
        to_commit = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            self._consumer.commit(offsets=to_commit, asynchronous=True)
        except KafkaException as exc:
            log.warning("commit_failed", error=str(exc))
            return counts
        self.stats.last_commit.update(offsets)
        return counts

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        # Typically a rebalance took the partitions away: their new owner re-processes the
        # batch, which the idempotent writes make harmless.
        if error is not None:
            COMMIT_FAILURES.labels(self.service).inc()
            log.warning("commit_failed", error=str(error))
