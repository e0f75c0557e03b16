"""The recommender's metrics and spans (docs/recommender.md, "Observability").

Metrics follow the services' naming scheme (docs/metrics.md): every name starts with ``mpp_``
and every series carries ``service="recommender"``. Spans: the front doors' instrumentations
(FastAPI, gRPC) start the request span; each source the request consults gets one child span,
``SourceCall``, named after the source, whose ``mpp.source.outcome`` says how it went. With
tracing off (the default) the spans are the OpenTelemetry API's no-op ones.

Sources (the ``source`` label and the span's name) and the store behind each:

- ``cache``: Redis, the cached answer (one HGET);
- ``session``: Redis, the user's recent messages (misses only);
- ``vector``: Milvus (``milvus`` in ``degraded_sources``);
- ``graph``: Neo4j (``neo4j``);
- ``popularity``: PostgreSQL, popularity and the user's rules (``postgres``).

No span or label carries a user id: traces are kept by another system, outside erasure.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Final, Literal

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from prometheus_client import Counter, Gauge, Histogram

from mpp import tracing
from mpp.logs import get_logger
from mpp.v1 import recommender_pb2 as R

log = get_logger(__name__)

SERVICE: Final = "recommender"

Source = Literal["cache", "session", "vector", "graph", "popularity"]
# A source's outcome in mpp_source_calls_total: it answered; it did not (an error, its
# deadline), so the answer is computed without it; it was not called (its breaker is open).
Outcome = Literal["ok", "degraded", "skipped"]
# Why a source is missing from an answer: mpp_source_degraded_total's reason and the span's
# mpp.source.reason.
Reason = Literal["error", "timeout", "breaker_open"]
CacheOutcome = Literal["hit", "miss", "error"]

# The core's names for the stores (circuit breakers, degraded_sources) -> the source label.
SOURCE_OF_STORE: Final[dict[str, Source]] = {
    "milvus": "vector",
    "neo4j": "graph",
    "postgres": "popularity",
    # The Redis breaker guards both the cache and the session read.
    "redis": "cache",
}
STORE_OF_SOURCE: Final[dict[Source, str]] = {
    "cache": "redis",
    "session": "redis",
    "vector": "milvus",
    "graph": "neo4j",
    "popularity": "postgres",
}

# Span attributes.
ATTR_SOURCE: Final = "mpp.source"
ATTR_STORE: Final = "mpp.source.store"
ATTR_OUTCOME: Final = "mpp.source.outcome"
ATTR_REASON: Final = "mpp.source.reason"
ATTR_STRATEGY: Final = "mpp.recommend.strategy"
ATTR_CACHED: Final = "mpp.recommend.cached"
ATTR_DEGRADED: Final = "mpp.recommend.degraded_sources"
ATTR_ITEMS: Final = "mpp.recommend.items"

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)

REQUESTS = Counter(
    "mpp_requests_total",
    "Requests to the API's methods (Recommend, RecordFeedback, ForgetUser), refusals at the "
    "door included, by front door (api: grpc, http), method and status code (gRPC: the "
    "code's name, OK, INVALID_ARGUMENT...; HTTP: the number).",
    ["service", "api", "method", "code"],
)
REQUEST_DURATION = Histogram(
    "mpp_request_duration_seconds",
    "Time to answer one request to the API's methods, whatever its code.",
    ["service", "api", "method"],
    buckets=LATENCY_BUCKETS,
)
CACHE_REQUESTS = Counter(
    "mpp_cache_requests_total",
    "Cached-answer lookups by outcome: hit, miss, error (Redis failed or its breaker is open).",
    ["service", "outcome"],
)
SOURCE_CALLS = Counter(
    "mpp_source_calls_total",
    "Sources consulted for an answer, by outcome: ok (it answered; a cache miss too), "
    "degraded (an error or its deadline: the answer goes without it), skipped (its circuit "
    "breaker is open: not called).",
    ["service", "source", "outcome"],
)
SOURCE_DURATION = Histogram(
    "mpp_source_duration_seconds",
    "From a source call to its outcome (its answer, its error or its deadline); skipped "
    "calls are not observed.",
    ["service", "source"],
    buckets=LATENCY_BUCKETS,
)
SOURCE_DEGRADED = Counter(
    "mpp_source_degraded_total",
    "Source calls without an answer, by reason: error, timeout (its deadline), breaker_open.",
    ["service", "source", "reason"],
)
BREAKER_OPEN = Gauge(
    "mpp_breaker_open",
    "1 while a source's circuit breaker is open (source cache: the Redis breaker, which "
    "guards the session read too).",
    ["service", "source"],
    # Several worker processes: 1 while any live worker's breaker is open.
    multiprocess_mode="livemax",
)
ANSWERS = Counter(
    "mpp_recommender_answers_total",
    "Answers computed (not cache hits), by strategy: personalized, cold_start, popularity, "
    "cached_fallback, static_fallback.",
    ["service", "strategy"],
)
LOG_ROWS = Counter(
    "mpp_recommender_log_rows_total",
    "recommendation_log rows by outcome: written, dropped, erased (fenced), pruned.",
    ["service", "outcome"],
)
FEEDBACK_OF_ERASED = Counter(
    "mpp_recommender_feedback_of_erased_total",
    "Feedback not recorded: its user was erased at or after its timestamp.",
    ["service"],
)

_tracer: tuple[object, trace.Tracer] | None = None


def tracer() -> trace.Tracer:
    """The recommender's tracer from the process's current provider (the API's no-op one
    while tracing is off). Not a module-level proxy: that would stay bound to the first
    provider it saw."""
    global _tracer
    provider = trace.get_tracer_provider()
    cached = _tracer
    if cached is None or cached[0] is not provider:
        cached = _tracer = (provider, tracing.get_tracer("mpp_recommender"))
    return cached[1]


# The hit path's series, bound once.
_CACHE_COUNTS = {o: CACHE_REQUESTS.labels(SERVICE, o) for o in ("hit", "miss", "error")}
_CACHE_DURATION = SOURCE_DURATION.labels(SERVICE, "cache")
_CACHE_OK = SOURCE_CALLS.labels(SERVICE, "cache", "ok")


_bound: dict[tuple[str, str, str], tuple[Any, Any]] = {}


def request_done(api: str, method: str, code: str, seconds: float) -> None:
    """Count one request (``mpp_requests_total``) and observe its time
    (``mpp_request_duration_seconds``); the series are looked up once."""
    key = (api, method, code)
    series = _bound.get(key)
    if series is None:
        series = _bound[key] = (
            REQUESTS.labels(SERVICE, api, method, code),
            REQUEST_DURATION.labels(SERVICE, api, method),
        )
    series[0].inc()
    series[1].observe(seconds)


def breaker_changed(store: str, is_open: bool) -> None:
    """Set ``mpp_breaker_open`` for a breaker of the core (named by its store)."""
    BREAKER_OPEN.labels(SERVICE, SOURCE_OF_STORE.get(store, store)).set(1 if is_open else 0)


def note_breaker(store: str, state: str) -> None:
    """A breaker of the core (named by its store) opened or closed: its gauge and a log event
    (``breaker_opened``, ``breaker_closed``)."""
    breaker_changed(store, state == "open")
    if state == "open":
        log.warning("breaker_opened", source=store)
    else:
        log.info("breaker_closed", source=store)


def reason_of(problem: str) -> Reason:
    """The reason of a store call that did not answer: ``open`` (the breaker's word) is
    ``breaker_open``, a timeout stays, anything else is an ``error``."""
    if problem in ("open", "breaker_open"):
        return "breaker_open"
    if problem == "timeout":
        return "timeout"
    return "error"


class SourceCall:
    """One source consulted for one request: its child span of the current (request) span,
    and its metrics, recorded once by ``finish`` (a late answer after the deadline is
    ignored: the first outcome wins).

    Thread-safe: a call is started on the request's thread, may finish on a source thread
    (its answer or error) or on the request's (its deadline), whichever comes first.
    """

    __slots__ = ("_done", "_lock", "_started", "source", "span")

    def __init__(self, source: Source, parent: otel_context.Context | None = None) -> None:
        self.source = source
        # Off, not even the API's no-op tracer is asked (a few microseconds a request).
        self.span: trace.Span = (
            tracer().start_span(
                source,
                context=parent,
                attributes={ATTR_SOURCE: source, ATTR_STORE: STORE_OF_SOURCE[source]},
            )
            if tracing.enabled()
            else trace.INVALID_SPAN
        )
        self._started = time.perf_counter()
        self._lock = threading.Lock()
        self._done = False

    def attach(self) -> object | None:
        """Make the span current on this thread (for spans of the clients it calls); returns
        the token for ``detach``, None when the span records nothing (tracing off)."""
        if not self.span.is_recording():
            return None
        return otel_context.attach(trace.set_span_in_context(self.span))

    @staticmethod
    def detach(token: object | None) -> None:
        if token is not None:
            otel_context.detach(token)  # type: ignore[arg-type]

    def _claim(self) -> bool:
        with self._lock:
            if self._done:
                return False
            self._done = True
            return True

    def finish(
        self,
        outcome: Outcome,
        reason: Reason | None = None,
        error: BaseException | None = None,
    ) -> bool:
        """Record the call's outcome (``reason`` when it is not ``ok``) and end its span.
        Returns False when the call had already finished."""
        if not self._claim():
            return False
        self._record(outcome, reason, error, outcome)
        return True

    def finish_cache(self, outcome: CacheOutcome, reason: Reason | None = None) -> None:
        """The cached-answer lookup's outcome (the span's ``mpp.source.outcome``: hit, miss,
        error): hit and miss are ``ok`` calls (Redis answered); an error is ``degraded``, or
        ``skipped`` when the Redis breaker is open."""
        if not self._claim():
            return
        _CACHE_COUNTS[outcome].inc()
        if outcome == "error":
            skipped = reason == "breaker_open"
            self._record("skipped" if skipped else "degraded", reason or "error", None, outcome)
            return
        _CACHE_DURATION.observe(time.perf_counter() - self._started)
        _CACHE_OK.inc()
        span = self.span
        if span.is_recording():
            span.set_attribute(ATTR_OUTCOME, outcome)
        span.end()

    def _record(
        self, outcome: Outcome, reason: Reason | None, error: BaseException | None, shown: str
    ) -> None:
        if outcome != "skipped":
            SOURCE_DURATION.labels(SERVICE, self.source).observe(
                time.perf_counter() - self._started
            )
        SOURCE_CALLS.labels(SERVICE, self.source, outcome).inc()
        if reason is not None:
            SOURCE_DEGRADED.labels(SERVICE, self.source, reason).inc()
        span = self.span
        if span.is_recording():
            span.set_attribute(ATTR_OUTCOME, shown)
            if reason is not None:
                span.set_attribute(ATTR_REASON, reason)
            if error is not None:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end()


def note_answer(strategy: str, cached: bool, degraded: list[str], items: int) -> None:
    """Name the answer on the request span (the current one): its strategy, whether it came
    from the cache, the stores it went without."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    span.set_attribute(ATTR_STRATEGY, strategy)
    span.set_attribute(ATTR_CACHED, cached)
    span.set_attribute(ATTR_DEGRADED, list(degraded))
    span.set_attribute(ATTR_ITEMS, items)


def answer_served(answer: R.RecommendResponse) -> None:
    """Count a computed or fallback answer (``mpp_recommender_answers_total`` by strategy) and
    name it on the request span."""
    ANSWERS.labels(SERVICE, answer.strategy).inc()
    note_answer(answer.strategy, answer.cached, list(answer.degraded_sources), len(answer.items))
