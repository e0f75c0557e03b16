"""Structured logging: one JSON object per line on stderr (or readable lines on a terminal).

Services log events, not sentences: ``log.info("batch_committed", records=500, ms=12.5)``.

Every line goes through the same processors, whoever writes it:
- the services' own (structlog);
- the standard ``logging`` module's (neo4j, pymilvus, uvicorn run with ``log_config=None``):
  a root handler whose ``structlog.stdlib.ProcessorFormatter`` renders them;
- librdkafka's, which the confluent-kafka clients hand to the ``logging.Logger`` named
  ``KAFKA_LOGGER`` (``mpp.config.KafkaSettings.client_config`` sets it as every client's
  ``logger``), rendered as ``librdkafka_log`` events with their facility and client name.

A line written while a sampled span is current carries its ``trace_id`` and ``span_id`` (hex,
as Jaeger shows them).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
from opentelemetry import trace

from mpp.config import KAFKA_LOGGER, Settings

# The root handler this module installs (found again, and replaced, on a second call).
_HANDLER_NAME = "mpp-structured"
_LIBRDKAFKA_LINE = re.compile(r"(\S+) \[([^\]]*)\] (.*)", re.DOTALL)


def add_trace_ids(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Add the current span's ids, if there is a valid one (none while tracing is off)."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event_dict["trace_id"] = format(ctx.trace_id, "032x")
        event_dict["span_id"] = format(ctx.span_id, "016x")
    return event_dict


def _from_stdlib(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Name a standard-library line's logger; split librdkafka's ``FAC [client] text``."""
    record = event_dict.get("_record")
    if not isinstance(record, logging.LogRecord):
        return event_dict
    event_dict["logger"] = record.name
    if record.name == KAFKA_LOGGER:
        # confluent-kafka logs "%s [%s] %s" % (facility, client name, text).
        parsed = _LIBRDKAFKA_LINE.match(str(event_dict.get("event", "")))
        if parsed is not None:
            event_dict["event"] = "librdkafka_log"
            event_dict["facility"], event_dict["client"], event_dict["message"] = parsed.groups()
    return event_dict


def configure_logging(settings: Settings, service: str) -> None:
    """Configure structlog and the standard ``logging`` module to write one event per line on
    stderr (JSON unless ``MPP_LOG_FORMAT=console``). Calling it again replaces the setup."""
    level = getattr(logging, settings.log_level)
    renderer: Any
    if settings.log_format == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_ids,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)

    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, _from_stdlib, structlog.processors.format_exc_info],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    # Libraries that use the standard logging module (neo4j, pymilvus, uvicorn) at WARNING
    # and above, so that their problems are not lost and their chatter stays out.
    root.setLevel(max(level, logging.WARNING))
    # librdkafka's own lines at the service's level: it logs little unless something is wrong.
    logging.getLogger(KAFKA_LOGGER).setLevel(level)


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
