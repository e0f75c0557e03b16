"""Running a worker service: logging, the health endpoints, the batch loop, clean shutdown.

A service module builds its handler and calls ``run_worker``; the loop's contract (commit after
the batch's writes, retry on ``RetryableError``, a poison record dead-lettered through
``Worker.dead_letters``, finish the batch on SIGTERM) is ``mpp.kafka.BatchLoop``'s.

Readiness (/readyz): Kafka reachable, the group's partitions assigned, then the worker's own
check (its stores). Liveness (/healthz) only says that the process answers: a Kafka or store
outage makes a worker unready, never restarted.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable
from dataclasses import dataclass, field

from mpp.config import Settings
from mpp.deadletters import DeadLetters
from mpp.kafka import BatchLoop, Handler, TrackedProducer
from mpp.logs import configure_logging, get_logger
from mpp.observability import HealthServer, ReadinessCheck, set_service
from mpp.tracing import configure_tracing, shutdown_tracing


@dataclass
class Worker:
    """What a service hands to ``run_worker``."""

    name: str
    topics: Iterable[str]
    handler: Handler
    batch_size: int
    max_wait_s: float
    producer: TrackedProducer | None = None
    # Extra readiness (a store's connection); the loop's own partition assignment is checked
    # first.
    readiness: ReadinessCheck | None = None
    consumer_overrides: dict[str, object] = field(default_factory=dict)
    # The loop's safety net: a record that makes the handler raise (not RetryableError) goes
    # there. None: such a record stops the service (only for tests of the old contract).
    dead_letters: DeadLetters | None = None
    # Errors that mean the service cannot work at all (a store made for another model): they
    # stop it instead of dead-lettering every record.
    fatal: tuple[type[BaseException], ...] = ()


def group_id(settings: Settings, worker: Worker) -> str:
    return f"{settings.kafka.group_prefix}-{worker.name}"


def build_loop(settings: Settings, worker: Worker) -> BatchLoop:
    return BatchLoop(
        settings.kafka,
        worker.name,
        group_id(settings, worker),
        worker.topics,
        worker.handler,
        batch_size=worker.batch_size,
        max_wait_s=worker.max_wait_s,
        producer=worker.producer,
        consumer_overrides=dict(worker.consumer_overrides),
        dead_letter=worker.dead_letters.send_failure if worker.dead_letters else None,
        fatal=worker.fatal,
    )


def loop_readiness(loop: BatchLoop, worker: Worker) -> ReadinessCheck:
    """/readyz's check: Kafka reachable, partitions assigned, then the worker's own."""

    def readiness() -> str | None:
        kafka = loop.broker_health.problem()
        if kafka is not None:
            return kafka
        if not loop.ready:
            return "kafka: no partitions assigned yet"
        return worker.readiness() if worker.readiness else None

    return readiness


def freeze_startup_objects() -> None:
    """What exists once a service has started (modules, models, catalogs) lives as long as the
    process: moved out of the collector's reach, full collections no longer walk it (they
    cost the graph-writer about 13 µs a row over a loaded process)."""
    gc.collect()
    gc.freeze()


def run_worker(settings: Settings, worker: Worker) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code."""
    configure_logging(settings, worker.name)
    set_service(worker.name)
    # OTEL_* variables only; off unless they name an exporter or an endpoint.
    tracing = configure_tracing(worker.name)
    log = get_logger(worker.name)
    loop = build_loop(settings, worker)
    health = HealthServer(settings.http.host, settings.http.port, loop_readiness(loop, worker))
    health.start()
    log.info(
        "service_started",
        http_port=health.port,
        group=group_id(settings, worker),
        topics=list(worker.topics),
        tracing=tracing,
    )
    loop.install_signal_handlers()
    freeze_startup_objects()
    try:
        loop.run()
    finally:
        health.stop()
        shutdown_tracing()  # flushes the spans still queued
    log.info("service_stopped", batches=loop.stats.batches, records=loop.stats.records)
    return 0
