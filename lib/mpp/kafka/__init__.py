"""Kafka for every service: topics, a producer that reports failures, and the batch loop.

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

A ``StagedHandler`` (the store writers) splits its work in two: ``prepare`` (decoding, the
dead letters, the rows: CPU in this process) and ``apply`` (the store's writes). The loop then
prepares batch N+1 while the store writes batch N, in a thread of its own: the store's wait
and this process's CPU overlap. Both steps still run one batch at a time and in order. Batch
N+1 waits, prepared, behind batch N's write, and its write starts as soon as N's returned;
the loop commits N then, without holding N+1 back. A write that fails holds back the one
queued behind it until the failed one was retried and committed. So the contract above holds
unchanged: offsets are committed in order, each once its batch's write returned, and a crash
replays at most the two batches not yet committed. On SIGTERM the batches already prepared are
written and committed too.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, cast, runtime_checkable

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Message,
    Producer,
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
from mpp.observability import (
    BATCH_DURATION,
    BATCH_RETRIES,
    BATCHES_BISECTED,
    COMMIT_FAILURES,
    CONSUMER_LAG,
    RECORDS_CONSUMED,
    RECORDS_PRODUCED,
)
from mpp.tracing import inject_headers

log = get_logger(__name__)
# Headers as confluent-kafka's typing spells them.
_Headers = list[tuple[str, str | bytes | None]]


class RetryableError(Exception):
    """A dependency is unavailable; the same batch should be tried again later.

    ``cause`` names the dependency (``milvus``, ``neo4j``, ``postgres``): the loop counts the
    retry under it (``mpp_batch_retries_total{cause}``).
    """

    def __init__(self, message: str, cause: str = "unknown") -> None:
        super().__init__(message)
        self.cause = cause


def retry_cause(exc: BaseException) -> str:
    """What made a batch retry: the store a ``RetryableError`` names, else ``kafka`` (a
    refused produce, a record not acknowledged)."""
    if isinstance(exc, RetryableError):
        return exc.cause
    return "kafka"


class RecordRefused(ValueError):
    """Kafka refuses, for good, a record a handler produced (larger than the topic accepts).

    Not retryable: the same record would be refused again. The loop's safety net finds the
    input record that made it and dead-letters that one.
    """


# Delivery errors that no retry gets past: the record itself is refused.
_REFUSED = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_RECORD})


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


class Sink(Protocol):
    """What a handler produces into: a TrackedProducer, or a list-backed fake in unit tests."""

    def produce(self, topic: str, value: bytes, key: bytes | str | None = None) -> None: ...


class DeliveryError(RuntimeError):
    """At least one produced record was not acknowledged by the brokers."""


class TrackedProducer:
    """An idempotent producer whose ``flush`` raises if any record since the last flush failed.

    A service produces its outputs, flushes, and only then commits its input offsets. Each
    record carries the trace context of the span current when it is produced
    (``mpp.tracing.inject_headers``), so the consumer's span continues the same trace.
    """

    def __init__(self, settings: KafkaSettings, service: str, **overrides: Any) -> None:
        conf: dict[str, Any] = {
            **settings.client_config(),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "message.timeout.ms": 120_000,
        }
        conf.update(overrides)
        self._producer = Producer(conf)
        self._service = service
        self._failures: list[str] = []
        self._refused: list[str] = []
        self._lock = threading.Lock()

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            with self._lock:
                failures = self._refused if err.code() in _REFUSED else self._failures
                failures.append(f"{msg.topic()}: {err.str()}")
        else:
            RECORDS_PRODUCED.labels(self._service, msg.topic()).inc()

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | str | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> None:
        while True:
            try:
                self._producer.produce(
                    topic,
                    value=value,
                    key=key,
                    # The current span's W3C context (none while tracing is off).
                    headers=cast(_Headers, inject_headers(headers)),
                    on_delivery=self._on_delivery,
                )
                return
            except BufferError:
                # Local queue full: back-pressure, wait for deliveries instead of failing.
                self._producer.poll(0.1)
            except KafkaException as exc:
                if exc.args[0].code() in _REFUSED:
                    size = len(value) + len(key.encode() if isinstance(key, str) else key or b"")
                    raise RecordRefused(
                        f"{topic}: a record of {size} bytes is refused: {exc.args[0].str()}"
                    ) from exc
                raise

    def flush(self, timeout_s: float = 60.0) -> None:
        remaining = self._producer.flush(timeout_s)
        with self._lock:
            failures, self._failures = self._failures, []
            refused, self._refused = self._refused, []
        if refused:
            raise RecordRefused(
                f"{len(refused)} record(s) refused: {'; '.join(sorted(set(refused))[:5])}"
            )
        if remaining:
            raise DeliveryError(f"{remaining} record(s) not delivered within {timeout_s}s")
        if failures:
            raise DeliveryError(
                f"{len(failures)} record(s) failed: {'; '.join(sorted(set(failures))[:5])}"
            )


Handler = Callable[[list[Message]], None]
# Where the loop's safety net sends a record that made the handler raise (with the exception).
DeadLetterSink = Callable[[Message, Exception], None]


@runtime_checkable
class StagedHandler(Protocol):
    """A handler in two steps that the loop overlaps across batches (see the module's doc).

    ``prepare`` must not write to the handler's store; it may produce (dead letters) and read.
    Either step may raise ``RetryableError``. Calling the handler runs both, one after the
    other, as a plain ``Handler``.
    """

    def prepare(self, batch: list[Message]) -> Any: ...

    def apply(self, prepared: Any) -> None: ...

    def __call__(self, batch: list[Message]) -> None: ...


# What makes the loop retry a batch later: a store down, Kafka refusing, a record unacknowledged.
RETRYABLE = (RetryableError, KafkaException, DeliveryError)


@dataclass
class _InFlight:
    """A batch whose ``apply`` runs (or waits to run) in the loop's writer thread."""

    batch: list[Message]
    prepared: Any
    started: float
    write: Future[None] = field(default_factory=Future)


# Batches handed to a staged handler's writer thread and not yet committed: the one being
# written and the next one, so that the writer goes on without waiting for this thread.
WRITES_QUEUED = 2


class _Skipped(Exception):
    """A staged write not attempted because a write queued before it failed."""


# ``_prepare_again``'s answer for a batch it settled itself (poison records isolated).
_SETTLED = object()


def _write_in_order(handler: StagedHandler, item: _InFlight, halted: threading.Event) -> None:
    """The writer thread's job: ``apply``, unless an earlier write failed (``halted``); the
    loop then retries that one and writes this one after it, itself."""
    if halted.is_set():
        raise _Skipped
    try:
        handler.apply(item.prepared)
    except BaseException:
        halted.set()
        raise


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


class BrokerHealth:
    """Whether a client reaches Kafka, from its statistics and error callbacks.

    librdkafka reports every broker connection's state in its statistics (every
    ``statistics.interval.ms``) and raises ``_ALL_BROKERS_DOWN`` as soon as none answers. A
    consumer that was given its partitions keeps them while Kafka is away, so that alone
    cannot tell readiness.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._down_since: float | None = None
        self._reason = ""

    def on_stats(self, stats: dict[str, Any]) -> None:
        brokers = [
            b
            for b in stats.get("brokers", {}).values()
            if b.get("source") in ("configured", "learned")
        ]
        if not brokers:
            return
        if any(b.get("state") == "UP" for b in brokers):
            self._down_since = None
        else:
            states = sorted({f"{b.get('name', '?')} {b.get('state', '?')}" for b in brokers})
            self.down(", ".join(states)[:300])

    def on_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self.down(error.str())

    def down(self, reason: str) -> None:
        if self._down_since is None:
            self._down_since = self._clock()
            log.warning("kafka_unreachable", reason=reason)
        self._reason = reason

    def problem(self) -> str | None:
        """None while Kafka is reachable, else why not."""
        if self._down_since is None:
            return None
        return f"kafka unreachable for {self._clock() - self._down_since:.0f}s: {self._reason}"


class BatchLoop:
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

    def _process(self, batch: list[Message]) -> None:
        started = time.perf_counter()
        if self._run_or_isolate(self.handler, batch):
            self._committed(batch, started)

    def _run_staged(self, handler: StagedHandler) -> None:
        """Write in a thread of its own, one batch after the other, while this thread reads
        and prepares the next batch; commit each batch once its write returned."""
        halted = threading.Event()
        in_flight: deque[_InFlight] = deque()
        with ThreadPoolExecutor(1, thread_name_prefix=f"{self.service}-write") as writer:
            while not self._stop.is_set():
                # At most one write left in flight, so that at most two are once this batch's
                # is queued: the writer starts it as soon as the one before it ends.
                if not self._finish_writes(handler, in_flight, halted, WRITES_QUEUED - 1):
                    return
                batch = self._poll_beside(in_flight[0] if in_flight else None)
                if not batch:
                    continue
                item = _InFlight(batch, None, time.perf_counter())
                try:
                    item.prepared = handler.prepare(batch)
                except Exception as exc:
                    if not isinstance(exc, RETRYABLE) and not self._can_isolate(exc):
                        raise
                    # The earlier batches are committed first, whatever becomes of this one.
                    if not self._finish_writes(handler, in_flight, halted, 0):
                        return
                    done, item.prepared = self._prepare_again(handler, batch, exc)
                    if not done:
                        return
                    if item.prepared is _SETTLED:
                        # Poison records found and dead-lettered, the others written.
                        self._committed(batch, item.started)
                        continue
                item.write = writer.submit(_write_in_order, handler, item, halted)
                in_flight.append(item)
            self._finish_writes(handler, in_flight, halted, 0)

    def _finish_writes(
        self,
        handler: StagedHandler,
        in_flight: deque[_InFlight],
        halted: threading.Event,
        keep: int,
    ) -> bool:
        """Commit the batches whose writes are done, oldest first, waiting for the oldest
        until at most ``keep`` remain (none once a write failed: the writes queued behind it
        are then made here, in order). False when stopped while retrying a write."""
        while in_flight and (len(in_flight) > keep or in_flight[0].write.done() or halted.is_set()):
            if not self._finish(handler, in_flight.popleft()):
                return False
        if not in_flight:
            halted.clear()
        return True

    def _poll_beside(self, in_flight: _InFlight | None) -> list[Message]:
        """The next batch; while a write is in flight, only until it is done, so that a quiet
        stream does not hold the written batch's commit for ``max_wait_s``."""
        if in_flight is None:
            return self._poll_batch()
        batch: list[Message] = []
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.batch_size and time.monotonic() < deadline:
            batch += self._poll_batch(self.batch_size - len(batch), timeout_s=0.02)
            if in_flight.write.done():
                break
        return batch

    def _prepare_again(
        self, handler: StagedHandler, batch: list[Message], failure: Exception
    ) -> tuple[bool, Any]:
        """``prepare`` retried after ``failure``: (False, None) when stopped meanwhile. A
        non-retryable failure has the batch settled here, poison isolated and the rest
        written (prepared and applied in this thread): (True, _SETTLED)."""
        prepared: list[Any] = []
        try:
            if not isinstance(failure, RETRYABLE):
                raise failure
            if self._with_retries(lambda: prepared.append(handler.prepare(batch)), batch, failure):
                return True, prepared[-1]
            return False, None
        except Exception as exc:
            if isinstance(exc, RETRYABLE) or not self._can_isolate(exc):
                raise
            return self._isolate(handler, batch, exc), _SETTLED

    def _finish(self, handler: StagedHandler, in_flight: _InFlight) -> bool:
        """Wait for the batch's write (retrying it if it failed), flush, commit. False when
        the loop was stopped while retrying: the batch is not committed."""

        def work() -> None:
            handler.apply(in_flight.prepared)
            self._flush()

        try:
            try:
                in_flight.write.result()
                self._flush()
            except _Skipped:
                # Queued behind a write that failed: written here, after that one.
                if not self._with_retries(work, in_flight.batch):
                    return False
            except RETRYABLE as exc:
                if not self._with_retries(work, in_flight.batch, exc):
                    return False
        except Exception as exc:
            if isinstance(exc, RETRYABLE) or not self._can_isolate(exc):
                raise
            # A poison record in the batch: prepared again and written in halves, here.
            if not self._isolate(handler, in_flight.batch, exc):
                return False
        self._committed(in_flight.batch, in_flight.started)
        return True

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
