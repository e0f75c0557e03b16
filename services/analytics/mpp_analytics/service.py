"""analytics: enriched messages and feedback in, PostgreSQL facts and aggregates out.

Loop (mpp.kafka.BatchLoop): consume ``conversations.enriched`` (``EnrichedMessage``),
``feedback.events`` (``FeedbackEvent``) and ``users.erasure`` (``ErasureRequest``); decode and
sort the batch (``records.plan_batch``) and set aside the facts PostgreSQL could not index
(``records.bound_lengths``: it refuses an index row over about 2.7 kB with an error that
reads like an outage); in one PostgreSQL transaction record the erasures in the ledger and
erase, write the facts (replays write nothing; a re-enriched message replaces its fact; an
erased user's facts sent before the erasure are dropped) and recompute the aggregates of
every key that changed (``mpp.analytics.store``); then dead-letter the records it could not
use; only then are the offsets committed.

PostgreSQL down: ``RetryableError``, and the loop retries the same batch with backoff,
committing nothing meanwhile. The warehouse is synced by a thread of its own
(``WarehouseSyncer``): its outages never hold up the stream.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from confluent_kafka import Message
from prometheus_client import Counter, Gauge, Histogram

from mpp.analytics.store import AnalyticsStore
from mpp.codecs import Rejection
from mpp.config import Settings
from mpp.deadletters import DeadLetters
from mpp.kafka import Handler, Sink, TrackedProducer
from mpp.logs import get_logger
from mpp.observability import store_operation, store_rows
from mpp.ownership import conflict
from mpp.service import Worker
from mpp.stores import postgres_connect
from mpp.tracing import Link, Span, get_tracer, links_to, start_record_span, store_span, use_span
from mpp.tracing import enabled as tracing_enabled
from mpp.v1 import events_pb2
from mpp.warehouse import Warehouse, WarehouseError, open_warehouse, warehouse_id
from mpp.warehouse.sync import SyncReport, sync_warehouse
from mpp_analytics.records import Batch, bound_lengths, plan_batch

SERVICE = "analytics"
log = get_logger(SERVICE)

FACTS_INSERTED = Counter(
    "mpp_analytics_facts_inserted_total",
    "Facts inserted (replays insert nothing).",
    ["service", "kind"],
)
USERS_ERASED = Counter("mpp_analytics_users_erased_total", "Erasure requests applied.", ["service"])
SYNC_SECONDS = Histogram(
    "mpp_analytics_warehouse_sync_seconds",
    "Time of one warehouse sync.",
    ["service"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
SYNC_FAILURES = Counter(
    "mpp_analytics_warehouse_sync_failures_total", "Failed warehouse syncs.", ["service"]
)
LAST_SYNC = Gauge(
    "mpp_analytics_warehouse_last_sync_timestamp_seconds",
    "Unix time of the last successful warehouse sync.",
    ["service"],
)


def build_handler(
    settings: Settings,
    store: AnalyticsStore,
    producer: Sink,
    on_erasure: Callable[[], None] | None = None,
) -> Handler:
    topics = settings.kafka.topics
    warehouse = warehouse_id(settings)
    dead_letters = DeadLetters.of(settings.kafka, producer, SERVICE)
    tracer = get_tracer(__name__)

    def write_each(plan: Batch) -> tuple[int, int]:
        """The batch fact by fact, after PostgreSQL refused it whole: the facts it refuses
        are dead-lettered, the others written. Returns (messages, feedback) inserted."""
        store.write([], [], list(plan.erasures), warehouse=warehouse, ledger=plan.ledger)
        inserted = [0, 0]
        facts: list[tuple[str, str, Any]] = [
            *(("message", k, v) for k, v in plan.messages.items()),
            *(("feedback", k, v) for k, v in plan.feedback.items()),
        ]
        for kind, key, fact in facts:
            try:
                if kind == "message":
                    result = store.write([fact], [])
                    inserted[0] += result.messages_inserted
                    if result.message_id_conflicts:  # another user's id: not moved
                        plan.rejected.append((plan.origins[(kind, key)], conflict(key)))
                else:
                    inserted[1] += store.write([], [fact]).feedback_inserted
            except (psycopg.DataError, psycopg.IntegrityError) as exc:
                detail = f"postgres refused the {kind} fact: {str(exc).strip()[:300]}"
                plan.rejected.append(
                    (
                        plan.origins[(kind, key)],
                        Rejection(events_pb2.ERROR_CODE_PROCESSING_FAILED, "", detail),
                    )
                )
        return inserted[0], inserted[1]

    def handle(batch: list[Message]) -> None:
        # Each record's span (a child of its producer's); the PostgreSQL write's span links
        # to those of the facts it writes, a dead letter carries its record's.
        spans = {id(msg): start_record_span(tracer, msg) for msg in batch}
        try:
            handle_traced(batch, spans)
        finally:
            for span in spans.values():
                span.end()

    def fact_links(plan: Batch, spans: dict[int, Span]) -> list[Link]:
        if not tracing_enabled():
            return []
        written = []
        for key in plan.messages:
            span = spans[id(plan.origins[("message", key)])]
            span.set_attribute("mpp.message_id", key)
            written.append(span)
        written += [spans[id(plan.origins[("feedback", key)])] for key in plan.feedback]
        return links_to(written)

    def handle_traced(batch: list[Message], spans: dict[int, Span]) -> None:
        plan = plan_batch(batch, topics.enriched, topics.feedback, topics.erasure)
        bound_lengths(plan)
        if not plan.empty:
            # Raises RetryableError while PostgreSQL is away: nothing below runs, the loop
            # retries the whole batch (and no dead letter is produced twice).
            try:
                facts = len(plan.messages) + len(plan.feedback)
                links = fact_links(plan, spans)
                with store_span(tracer, "postgres", "insert", facts, links):
                    result = store.write(
                        list(plan.messages.values()),
                        list(plan.feedback.values()),
                        list(plan.erasures),
                        warehouse=warehouse,
                        ledger=plan.ledger,
                    )
                inserted = (result.messages_inserted, result.feedback_inserted)
                # Ids another user's fact holds: not moved, dead-lettered (mpp.ownership).
                for message_id in result.message_id_conflicts:
                    plan.rejected.append(
                        (plan.origins[("message", message_id)], conflict(message_id))
                    )
            except (psycopg.DataError, psycopg.IntegrityError) as exc:
                # A value the decoding let through but PostgreSQL refuses: find it rather
                # than fail the batch forever.
                log.warning("batch_refused_writing_fact_by_fact", error=str(exc)[:300])
                inserted = write_each(plan)
            FACTS_INSERTED.labels(SERVICE, "message").inc(inserted[0])
            FACTS_INSERTED.labels(SERVICE, "feedback").inc(inserted[1])
            for request_id in plan.erasures.values():
                # The user id is not logged: the request id traces the erasure.
                log.info("user_erased", request_id=request_id)
            USERS_ERASED.labels(SERVICE).inc(len(plan.erasures))
            log.debug("facts_written", messages=inserted[0], feedback=inserted[1])
        for msg, rejection in plan.rejected:
            with use_span(spans[id(msg)]):
                dead_letters.send(msg, rejection)
        if plan.erasures and on_erasure is not None:
            on_erasure()

    return handle


class WarehouseSyncer:
    """Syncs the warehouse every ``warehouse_sync_s``, soon after an erasure, and on demand.

    Failures are logged and counted; the next round resumes from the watermarks.
    """

    # After an erasure, sync within this many seconds rather than at the next period.
    ERASURE_DELAY_S = 2.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.interval_s = settings.analytics.warehouse_sync_s
        self._warehouse: Warehouse | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="warehouse-sync", daemon=True)
        self.last: SyncReport | None = None
        self.last_error: str | None = None

    def start(self) -> WarehouseSyncer:
        self._thread.start()
        return self

    def request(self) -> None:
        """Ask for a sync soon (after an erasure)."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)
        with self._lock:
            if self._warehouse is not None:
                self._warehouse.close()
                self._warehouse = None

    def sync(self, full: bool = False) -> SyncReport:
        """One sync now; raises WarehouseError or psycopg.Error."""
        with self._lock:
            started = time.perf_counter()
            try:
                if self._warehouse is None:
                    self._warehouse = open_warehouse(self.settings)
                with (
                    # Not tied to records (it copies what PostgreSQL gained since the
                    # watermarks): a span of its own, without links.
                    store_span(get_tracer(__name__), "warehouse", "sync", 0) as span,
                    store_operation("warehouse", "sync", SERVICE),
                    postgres_connect(self.settings, autocommit=True) as conn,
                ):
                    report = sync_warehouse(conn, self._warehouse, full=full)
                    span.set_attribute("mpp.batch.size", sum(report.facts.values()))
            except Exception as exc:
                SYNC_FAILURES.labels(SERVICE).inc()
                self.last_error = str(exc)[:500]
                if isinstance(exc, WarehouseError) and self._warehouse is not None:
                    self._warehouse.close()
                    self._warehouse = None
                raise
            SYNC_SECONDS.labels(SERVICE).observe(time.perf_counter() - started)
            store_rows("warehouse", "sync", sum(report.facts.values()), SERVICE)
            LAST_SYNC.labels(SERVICE).set(time.time())
            self.last, self.last_error = report, None
            return report

    def _run(self) -> None:
        # First sync shortly after start, then every interval (or soon after an erasure).
        delay = min(self.interval_s, 5.0)
        while not self._stop.is_set():
            if self._wake.wait(delay) and not self._stop.is_set():
                self._wake.clear()
                self._stop.wait(self.ERASURE_DELAY_S)
            if self._stop.is_set():
                return
            try:
                self.sync()
            except Exception as exc:
                log.warning("warehouse_sync_failed", error=str(exc)[:500])
            delay = self.interval_s


def worker(
    settings: Settings,
    store: AnalyticsStore | None = None,
    on_erasure: Callable[[], None] | None = None,
) -> Worker:
    store = store or AnalyticsStore(settings)
    producer = TrackedProducer(settings.kafka, service=SERVICE)
    topics = settings.kafka.topics
    return Worker(
        name=SERVICE,
        topics=[topics.enriched, topics.feedback, topics.erasure],
        handler=build_handler(settings, store, producer, on_erasure),
        batch_size=settings.analytics.batch_size,
        max_wait_s=settings.analytics.max_wait_s,
        producer=producer,
        readiness=store.ping,
        dead_letters=DeadLetters.of(settings.kafka, producer, SERVICE),
    )
