"""The W3C trace context in Kafka headers, the common case on a short path.

Every record the services consume and produce carries one ``traceparent`` header (version
``00``) and, almost always, nothing else of the trace context: no ``tracestate``, no
``baggage``. For that case, reading and writing the header here costs a few microseconds,
where OpenTelemetry's composite propagator (``tracecontext,baggage``: a getter call, a regular
expression and a context copy per propagator) costs tens per record and service, which the
streaming path pays on every event whether it is sampled or not (docs/tracing.md).

Anything else goes to the configured propagators, so the outcome is always theirs: a
``tracestate`` or ``baggage`` header, a ``traceparent`` of another version or with spaces, a
context holding baggage or a trace state, and any ``OTEL_PROPAGATORS`` other than
``tracecontext`` with or without ``baggage`` (``short_path_allowed`` says which).
tests/unit/test_w3c.py checks both directions against the propagators on random contexts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

TRACEPARENT = "traceparent"
# Headers whose presence sends a record to the propagators: they carry more than a traceparent.
_OTHER_CONTEXT_HEADERS = frozenset({"tracestate", "baggage"})
_VERSION_00 = re.compile(rb"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_EMPTY = otel_context.Context()

KafkaHeaders = Sequence[tuple[str, bytes | None]]


def short_path_allowed() -> bool:
    """Whether ``OTEL_PROPAGATORS`` names the default propagators (``tracecontext`` and
    ``baggage``) or ``tracecontext`` alone: the only configurations the short path matches."""
    names = [n.strip() for n in os.environ.get("OTEL_PROPAGATORS", "").split(",") if n.strip()]
    if not names:
        return True
    return "tracecontext" in names and set(names) <= {"tracecontext", "baggage"}


def extract(headers: KafkaHeaders) -> otel_context.Context | None:
    """The context of a record whose only trace header is a version-00 ``traceparent``
    (empty when it has none, or an invalid one, as the propagator gives it); None when the
    propagators must read the headers."""
    value: bytes | None = None
    for key, header in headers:
        if key == TRACEPARENT:
            # The propagator's getter takes the first such header that has a value.
            if value is None and header is not None:
                value = header
        elif key in _OTHER_CONTEXT_HEADERS:
            return None
    if value is None:
        return _EMPTY
    match = _VERSION_00.fullmatch(value)
    if match is None:
        return None
    trace_id, span_id = int(match[1], 16), int(match[2], 16)
    if trace_id == 0 or span_id == 0:
        return _EMPTY
    flags = TraceFlags(int(match[3], 16))
    parent = SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags)
    return trace.set_span_in_context(NonRecordingSpan(parent), _EMPTY)


def inject() -> list[tuple[str, bytes]] | None:
    """The trace headers of the current context when it holds a span context without trace
    state and no baggage (a ``traceparent``, or nothing for an invalid span context, as the
    propagators write them); None when the propagators must write them."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.trace_state or baggage.get_all():
        return None
    if ctx == trace.INVALID_SPAN_CONTEXT:
        return []
    header = b"00-%032x-%016x-%02x" % (ctx.trace_id, ctx.span_id, ctx.trace_flags)
    return [(TRACEPARENT, header)]
