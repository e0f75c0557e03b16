"""The batch loop every service consumes with: read a batch, handle it, commit after success.

The loop's contract (``BatchLoop``):
- records are handled a batch at a time (``batch_size`` records or ``max_wait_s``, whichever
  comes first);
- offsets are committed only after the handler returned and everything it produced was
  acknowledged by the brokers: at-least-once delivery, which idempotent writes turn into
  effectively-once. The commit is sent asynchronously (the next batch is read meanwhile;
  ``close`` waits for commits in flight): one lost to a crash only means a replay;
- a handler that raises ``RetryableError`` (a store is down) has its batch retried with
  backoff, consumption paused meanwhile, never skipped;
- any other exception means a record the service cannot process (a poison record): given a
  ``dead_letter`` sink, the loop splits the batch in halves, again and again, until it has
  found the record(s) that raise; each of those is dead-lettered with the exception's type,
  every other record is processed, and the loop goes on (``_isolate``). Exceptions listed as
  ``fatal`` (a store made for another configuration), or any exception without a sink, stop
  the service without committing, so the batch is processed again after a restart;
- SIGTERM or SIGINT finishes the current batch, commits it and exits; while a batch is being
  retried (a store is down) it exits at once without committing that batch.

A ``StagedHandler`` overlaps a batch's store writes with the next batch's preparation
(``mpp.kafka.staged``); retries, the safety net and commits are ``mpp.kafka.retries``'.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, Message, TopicPartition

from mpp.config import KafkaSettings
from mpp.kafka.health import BrokerHealth
from mpp.kafka.producer import TrackedProducer
from mpp.kafka.retries import DeadLetterSink, Handler, LoopStats
from mpp.kafka.staged import StagedHandler, StagedLoop
from mpp.logs import get_logger
from mpp.observability import CONSUMER_LAG

# The package's one logger name, as before it was split into modules.
log = get_logger("mpp.kafka")


class BatchLoop(StagedLoop):
    """Consume ``topics`` as ``group_id``, hand batches to ``handler``, commit after success."""

    def __init__(
        self,
        settings: KafkaSettings,
        service: str,
        group_id: str,
        topics: Iterable[str],
        handler: Handler,
        *,
        batch_size: int = 500,
        max_wait_s: float = 0.5,
        producer: TrackedProducer | None = None,
        max_backoff_s: float = 30.0,
        consumer_overrides: dict[str, Any] | None = None,
        dead_letter: DeadLetterSink | None = None,
        fatal: tuple[type[BaseException], ...] = (),
    ) -> None:
        self.service = service
        self.topics = list(topics)
        self.handler = handler
        self.batch_size = batch_size
        self.max_wait_s = max_wait_s
        self.producer = producer
        self.max_backoff_s = max_backoff_s
        # The safety net (see the module's doc); None: any non-retryable error stops the loop.
        self.dead_letter = dead_letter
        self.fatal = fatal
        self.stats = LoopStats()
        self.broker_health = BrokerHealth()
        self._stop = threading.Event()
        self._assigned = threading.Event()
        conf: dict[str, Any] = {
            **settings.client_config(),
            "group.id": group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            # A batch may wait on a store for minutes; the loop keeps polling while paused,
            # this only bounds a handler that hangs.
            "max.poll.interval.ms": 600_000,
            "statistics.interval.ms": 5_000,
            "stats_cb": self._on_stats,
            "error_cb": self.broker_health.on_error,
            "on_commit": self._on_commit,
        }
        conf.update(consumer_overrides or {})
        self._consumer = Consumer(conf)

    # -- lifecycle ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish its batch, commit and return. Safe from any thread."""
        self._stop.set()

    @property
    def ready(self) -> bool:
        """True once the group gave this member its partitions."""
        return self._assigned.is_set()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    def run(self) -> LoopStats:
        self._consumer.subscribe(
            self.topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        log.info(
            "loop_started",
            topics=self.topics,
            batch_size=self.batch_size,
            staged=isinstance(self.handler, StagedHandler),
        )
        try:
            if isinstance(self.handler, StagedHandler):
                self._run_staged(self.handler)
            else:
                while not self._stop.is_set():
                    batch = self._poll_batch()
                    if batch:
                        self._process(batch)
        finally:
            self._consumer.close()
            log.info("loop_stopped", batches=self.stats.batches, records=self.stats.records)
        return self.stats

    # -- internals ---------------------------------------------------------------------------

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Their lag is the new owner's to report: a series left here would count it twice
        # (mpp_consumer_lag_records is summed across replicas).
        for p in partitions:
            with contextlib.suppress(KeyError):  # never reported
                CONSUMER_LAG.remove(self.service, p.topic, str(p.partition))

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned.set()
        log.info(
            "partitions_assigned", partitions=[f"{p.topic}[{p.partition}]" for p in partitions]
        )

    def _on_stats(self, stats_json: str) -> None:
        stats = json.loads(stats_json)
        self.broker_health.on_stats(stats)
        for topic, t in stats.get("topics", {}).items():
            for partition, p in t.get("partitions", {}).items():
                lag = p.get("consumer_lag", -1)
                if partition != "-1" and lag >= 0:
                    CONSUMER_LAG.labels(self.service, topic, partition).set(lag)

    def _process(self, batch: list[Message]) -> None:
        started = time.perf_counter()
        if self._run_or_isolate(self.handler, batch):
            self._committed(batch, started)
