"""Prometheus metrics and the /healthz, /readyz, /metrics endpoints every worker exposes.

Workers (ingest, embedder, writers, analytics) have no web framework; a small threaded HTTP
server is enough and keeps their loop in one module. The recommender serves the same paths
from FastAPI.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

RECORDS_CONSUMED = Counter(
    "mpp_records_consumed_total", "Records read from Kafka.", ["service", "topic"]
)
RECORDS_PRODUCED = Counter(
    "mpp_records_produced_total", "Records written to Kafka.", ["service", "topic"]
)
RECORDS_FAILED = Counter(
    "mpp_records_failed_total", "Records dead-lettered or rejected.", ["service", "reason"]
)
CONSUMER_LAG = Gauge(
    "mpp_consumer_lag",
    "Messages behind the end of the partition.",
    ["service", "topic", "partition"],
)
BATCH_SECONDS = Histogram(
    "mpp_batch_seconds",
    "Time to process and commit one batch.",
    ["service"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
COMMIT_FAILURES = Counter(
    "mpp_commit_failures_total",
    "Offset commits the broker refused (the records are read again; writes are idempotent).",
    ["service"],
)
BATCH_RETRIES = Counter(
    "mpp_batch_retries_total", "Batches retried because a store or Kafka failed.", ["service"]
)
BATCHES_BISECTED = Counter(
    "mpp_batches_bisected_total",
    "Batches split in halves because a record made the handler fail (a poison record).",
    ["service"],
)

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
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest())
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
