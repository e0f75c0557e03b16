"""Prometheus metrics and the /healthz, /readyz, /metrics endpoints every worker exposes.

Workers (ingest, embedder, writers, analytics) have no web framework; a small threaded HTTP
server is enough and keeps their loop in one module. The recommender serves the same paths
from FastAPI.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

# The naming scheme (docs/metrics.md): every name starts with ``mpp_``, every series carries
# ``service`` (the process's ``service_name()`` unless a call site knows better), units are
# in the name (``_seconds``, ``_records``), counters end in ``_total``. The alert rules and the
# dashboard (helm/mpp/files/) may name only metrics defined with this scheme, which
# tests/unit/test_metrics_names.py checks against the registry.

_service = "unknown"


def set_service(name: str) -> None:
    """Name this process's service, for the series of code shared between services (the
    stores, the front doors). Called once at start, before any store is used."""
    global _service
    _service = name


def service_name() -> str:
    """The name ``set_service`` gave (``unknown`` before it was called)."""
    return _service


def exposition() -> bytes:
    """The /metrics body: this process's series, or, when ``PROMETHEUS_MULTIPROC_DIR`` is set
    (a service of several worker processes, ``mpp_recommender.workers``), every live and
    past worker's, summed (gauges: as each declares its ``multiprocess_mode``)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest()


# Latency buckets for one store call (a MERGE of a batch, a vector search) and for a batch.
STORE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

RECORDS_CONSUMED = Counter(
    "mpp_records_consumed_total",
    "Records read from Kafka and committed (the batch's writes succeeded).",
    ["service", "topic"],
)
RECORDS_PRODUCED = Counter(
    "mpp_records_produced_total",
    "Records written to Kafka and acknowledged by the brokers (dead letters included).",
    ["service", "topic"],
)
RECORDS_DEAD_LETTERED = Counter(
    "mpp_records_dead_lettered_total",
    "Records sent to the DLQ, by the reason's ErrorCode name.",
    ["service", "reason"],
)
CONSUMER_LAG = Gauge(
    "mpp_consumer_lag_records",
    "Records between the consumer's position and the end of the partition (librdkafka's "
    "statistics, every 5 s).",
    ["service", "topic", "partition"],
)
BATCH_DURATION = Histogram(
    "mpp_batch_duration_seconds",
    "From a batch read to its commit: processing, writes, produce and flush.",
    ["service"],
    buckets=BATCH_BUCKETS,
)
COMMIT_FAILURES = Counter(
    "mpp_commit_failures_total",
    "Offset commits the broker refused (the records are read again; writes are idempotent).",
    ["service"],
)
BATCH_RETRIES = Counter(
    "mpp_batch_retries_total",
    "Batch attempts retried because a dependency failed; cause: the store (milvus, neo4j, "
    "postgres) or kafka.",
    ["service", "cause"],
)
BATCHES_BISECTED = Counter(
    "mpp_batches_bisected_total",
    "Batches split in halves because a record made the handler fail (a poison record).",
    ["service"],
)
STORE_OPERATIONS = Counter(
    "mpp_store_operations_total",
    "Calls to a store, by outcome (ok, or error: the call raised).",
    ["service", "store", "operation", "outcome"],
)
STORE_DURATION = Histogram(
    "mpp_store_operation_duration_seconds",
    "Time of one store call, whatever its outcome (the batch loop's retries excluded).",
    ["service", "store", "operation"],
    buckets=STORE_BUCKETS,
)
STORE_ROWS = Counter(
    "mpp_store_rows_total",
    "Rows (messages, facts, users) a store call wrote or deleted.",
    ["service", "store", "operation"],
)


@contextmanager
def store_operation(store: str, operation: str, service: str | None = None) -> Iterator[None]:
    """Count and time one store call: ``mpp_store_operations_total`` (outcome ok, or error
    when the block raises) and ``mpp_store_operation_duration_seconds``."""
    name = service or _service
    started = time.perf_counter()
    outcome = "error"
    try:
        yield
        outcome = "ok"
    finally:
        STORE_DURATION.labels(name, store, operation).observe(time.perf_counter() - started)
        STORE_OPERATIONS.labels(name, store, operation, outcome).inc()


def store_rows(store: str, operation: str, rows: int, service: str | None = None) -> None:
    """Add ``rows`` to ``mpp_store_rows_total``."""
    STORE_ROWS.labels(service or _service, store, operation).inc(rows)


ReadinessCheck = Callable[[], str | None]


class HealthServer:
    """Serves /healthz (the process is alive), /readyz (it can do its work) and /metrics.

    ``readiness`` returns None when ready, else a short reason; it must be quick.
    """

    def __init__(self, host: str, port: int, readiness: ReadinessCheck) -> None:
        self._readiness = readiness
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/healthz":
                    self._send(200, "application/json", b'{"status":"ok"}')
                elif self.path == "/readyz":
                    reason = outer._readiness()
                    body = json.dumps(
                        {"status": "ready"}
                        if reason is None
                        else {"status": "not_ready", "reason": reason}
                    ).encode()
                    self._send(200 if reason is None else 503, "application/json", body)
                elif self.path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, exposition())
                else:
                    self._send(404, "application/json", b'{"error":"not found"}')

            def _send(self, code: int, content_type: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                # Probes hit these paths every few seconds; access logs would drown the rest.
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
