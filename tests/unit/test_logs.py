"""mpp.logs: every line on stderr is one JSON object, librdkafka's and the stdlib's included.

Each case runs in a child process so that the whole of its stderr, as a service would write it,
is read back; no Kafka broker is needed (a client that cannot connect is what makes librdkafka
log).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def run_child(code: str, **env: str) -> tuple[list[dict[str, Any]], str]:
    """Run ``code`` in a fresh interpreter; return its stderr lines parsed as JSON, and its
    stdout. Fails the test on any stderr line that is not a JSON object."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MPP_"))} | env
    child_env["PYTHONPATH"] = f"{ROOT / 'lib'}{os.pathsep}{child_env.get('PYTHONPATH', '')}"
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = []
    for line in done.stderr.splitlines():
        try:
            parsed = json.loads(line)
        except json.JSONDecodeError:
            raise AssertionError(f"a stderr line is not JSON: {line!r}") from None
        assert isinstance(parsed, dict), line
        lines.append(parsed)
    return lines, done.stdout


def test_librdkafka_lines_are_json_events() -> None:
    lines, _ = run_child(
        """
        import time
        from confluent_kafka import Producer
        from mpp.config import Settings
        from mpp.logs import configure_logging

        settings = Settings()
        configure_logging(settings, "ingest")
        # Nothing listens on port 1: librdkafka logs its failed connections.
        conf = settings.kafka.model_copy(update={"bootstrap_servers": "127.0.0.1:1"})
        producer = Producer({**conf.client_config(), "reconnect.backoff.ms": 50})
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            producer.poll(0.2)
        """,
    )
    kafka = [line for line in lines if line.get("logger") == "librdkafka"]
    assert kafka, f"librdkafka logged nothing through the logger hook: {lines[:5]}"
    for line in kafka:
        assert line["event"] == "librdkafka_log"
        assert line["service"] == "ingest"
        assert line["level"] in {"debug", "info", "warning", "error", "critical"}
        assert line["facility"] and "#producer-" in line["client"]
        assert "timestamp" in line
    assert any("127.0.0.1:1" in line["message"] for line in kafka)


def test_stdlib_lines_and_own_events_are_json() -> None:
    lines, _ = run_child(
        """
        import logging
        from mpp.config import Settings
        from mpp.logs import configure_logging, get_logger

        settings = Settings()
        configure_logging(settings, "graph-writer")
        configure_logging(settings, "graph-writer")  # a second call adds no second handler
        get_logger("t").info("batch_committed", records=3)
        logging.getLogger("neo4j.pool").warning("connection %s lost", "bolt-1")
        logging.getLogger("pymilvus").info("chatter below WARNING is dropped")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("uvicorn.error").exception("request failed")
        """,
        MPP_LOG_LEVEL="INFO",
    )
    events = [line["event"] for line in lines]
    assert events == ["batch_committed", "connection bolt-1 lost", "request failed"]
    own, neo4j, uvicorn = lines
    assert own["records"] == 3 and own["service"] == "graph-writer" and own["level"] == "info"
    assert neo4j["logger"] == "neo4j.pool" and neo4j["level"] == "warning"
    assert neo4j["service"] == "graph-writer"
    assert uvicorn["level"] == "error" and "ValueError: boom" in uvicorn["exception"]
    assert not any("trace_id" in line for line in lines)  # no span, no ids


def test_lines_carry_the_current_span_ids() -> None:
    lines, stdout = run_child(
        """
        import logging
        from mpp import tracing
        from mpp.config import Settings
        from mpp.logs import configure_logging, get_logger

        configure_logging(Settings(), "embedder")
        assert tracing.configure_tracing("embedder")
        with tracing.get_tracer("t").start_as_current_span("work") as span:
            ctx = span.get_span_context()
            print(format(ctx.trace_id, "032x"), format(ctx.span_id, "016x"))
            get_logger("t").info("inside")
            logging.getLogger("neo4j").warning("inside too")
        get_logger("t").info("outside")
        tracing.shutdown_tracing()
        """,
        # Spans printed to stdout, not sent anywhere; stderr holds only the log lines.
        OTEL_TRACES_EXPORTER="console",
    )
    trace_id, span_id = stdout.splitlines()[0].split()
    by_event = {line["event"]: line for line in lines}
    for event in ("inside", "inside too"):
        assert by_event[event]["trace_id"] == trace_id
        assert by_event[event]["span_id"] == span_id
    assert "trace_id" not in by_event["outside"]
