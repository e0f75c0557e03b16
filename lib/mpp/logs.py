"""Structured logging: one JSON object per line on stderr (or readable lines on a terminal).

Services log events, not sentences: ``log.info("batch_committed", records=500, ms=12.5)``.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from mpp.config import Settings


def configure_logging(settings: Settings, service: str) -> None:
    level = getattr(logging, settings.log_level)
    renderer: Any
    if settings.log_format == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
    # Libraries that use the standard logging module (neo4j, pymilvus, uvicorn) go to stderr
    # at WARNING and above, so that their problems are not lost.
    logging.basicConfig(level=max(level, logging.WARNING), stream=sys.stderr)


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
