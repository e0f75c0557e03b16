"""The recommender's core, behind both front doors (gRPC and HTTP): recommend, feedback, erasure.

``recommend`` (cache-aside):
1. one HGET: a cached answer is returned as it is (``cached`` set);
2. on a miss, the user's session is read from Redis and the three sources run concurrently,
   each within its own deadline and behind its circuit breaker;
3. PostgreSQL answered: the sources are blended, the rules applied (live campaigns, no
   conversion or dismissal, daily caps) and the answer cached, unless the user said something
   new meanwhile. Strategy: ``personalized``; ``cold_start`` when neither Milvus nor Neo4j knows
   the user; ``popularity`` when both are down;
4. PostgreSQL down (the rules cannot be checked): the last answer computed for the user
   (``cached_fallback``), else a static list (``static_fallback``);
5. every source that failed, timed out or had its breaker open is named in
   ``degraded_sources`` (``redis`` too when the cache could not be used). No outage of a store
   is an error for the caller.

What was served (computed answers, not cache hits) goes to ``recommendation_log`` from a
background thread, an audit record kept ``log_retention_days``; the daily frequency cap counts
impressions (reported as feedback), see docs/recommender.md.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from mpp.catalog import CAMPAIGN_ID_PATTERN
from mpp.codecs import Rejection, event_time
from mpp.config import Settings
from mpp.erasure import fence, record_erasure
from mpp.graph import GraphStore
from mpp.ids import derive_feedback_id, user_hash, user_hashes
from mpp.kafka import DeliveryError, TrackedProducer
from mpp.logs import get_logger
from mpp.v1 import feedback_pb2 as F
from mpp.v1 import recommender_pb2 as R
from mpp.validation import CHANNEL, LOCALE, USER_ID
from mpp_recommender.blend import (
    CampaignInfo,
    Candidate,
    Ranked,
    Reason,
    apply_rules,
    blend,
)
from mpp_recommender.breaker import CircuitBreaker, State
from mpp_recommender.cache import Lookup, RedisCache, answer_field
from mpp_recommender.sources import MilvusSource, Neo4jSource, PostgresSource, SourceAnswer
from mpp_recommender.telemetry import (
    ANSWERS,
    FEEDBACK_OF_ERASED,
    LOG_ROWS,
    SERVICE,
    SOURCE_OF_STORE,
    SourceCall,
    breaker_changed,
    note_answer,
    reason_of,
)

log = get_logger(__name__)
T = TypeVar("T")

FEEDBACK_KINDS = {
    F.FEEDBACK_TYPE_IMPRESSION: "impression",
    F.FEEDBACK_TYPE_CLICK: "click",
    F.FEEDBACK_TYPE_CONVERSION: "conversion",
    F.FEEDBACK_TYPE_DISMISSAL: "dismissal",
}
MAX_LIMIT = 100
# Degraded answers are cached briefly: long enough to spare a struggling store under load,
# short enough that a recovered store is used again soon.
DEGRADED_TTL_S = 5
LAST_ANSWERS_IN_PROCESS = 10_000
CAMPAIGN_ID = re.compile(CAMPAIGN_ID_PATTERN)
# How long an erasure waits for the warehouse before leaving it to the next sync.
WAREHOUSE_TIMEOUT_S = 5.0


class InvalidArgument(ValueError):
    """Bad input: names the field and the fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class Unavailable(RuntimeError):
    """The request cannot be honoured now (Kafka down for feedback or erasure); retry."""


def check_user_id(user_id: str, field: str = "user_id") -> str:
    if not user_id:
        raise InvalidArgument(field, "is required; pass the user's id")
    if not USER_ID.fullmatch(user_id):
        raise InvalidArgument(
            field,
            f"{user_id[:80]!r} is not a user id: use 1-128 characters of letters, digits and "
            "._:@- starting with a letter or digit",
        )
    return user_id


def check_limit(limit: int, default: int) -> int:
    if limit < 0 or limit > MAX_LIMIT:
        raise InvalidArgument(
            "limit", f"{limit} is out of range: use 1-{MAX_LIMIT}, or 0 for the default"
        )
    return limit or default


def check_target(channel: str, locale: str) -> None:
    """The request's channel and locale, as events carry them (mpp.validation)."""
    if channel and not CHANNEL.fullmatch(channel):
        raise InvalidArgument(
            "channel", f"{channel[:40]!r} must be a short lowercase token like 'web' or 'in_app'"
        )
    if locale and not LOCALE.fullmatch(locale):
        raise InvalidArgument(
            "locale", f"{locale[:40]!r} must be a BCP 47 tag like 'en' or 'pt-BR'"
        )


def check_feedback(feedback: F.FeedbackEvent, now_s: float | None = None) -> tuple[str, datetime]:
    """The feedback's kind and time (UTC), or InvalidArgument naming the field.

    Completes the event in place: a missing timestamp becomes ``now_s`` (default: the clock),
    a missing feedback_id is derived from the rest, so that a retry is counted once.
    """
    check_user_id(feedback.user_id, "feedback.user_id")
    if not feedback.campaign_id:
        raise InvalidArgument("feedback.campaign_id", "is required; name the campaign")
    if not CAMPAIGN_ID.fullmatch(feedback.campaign_id):
        raise InvalidArgument(
            "feedback.campaign_id",
            f"{feedback.campaign_id[:80]!r} is not a campaign id: use 1-128 characters of "
            "letters, digits and ._:- starting with a letter or digit",
        )
    kind = FEEDBACK_KINDS.get(feedback.type)
    if kind is None:
        raise InvalidArgument(
            "feedback.type", "must be one of impression, click, conversion, dismissal"
        )
    if len(feedback.feedback_id) > 128:
        raise InvalidArgument("feedback.feedback_id", "is longer than 128 characters")
    now_s = time.time() if now_s is None else now_s
    if not feedback.HasField("timestamp"):
        feedback.timestamp.FromNanoseconds(int(now_s * 1e9))
    try:
        occurred = event_time(feedback.timestamp, "feedback.timestamp")
    except Rejection as exc:
        raise InvalidArgument(exc.field, exc.detail) from exc
    ts_ms = feedback.timestamp.ToMilliseconds()
    if ts_ms > now_s * 1000 + 300_000:
        raise InvalidArgument(
            "feedback.timestamp", "is more than 5 minutes in the future; send UTC time"
        )
    if not feedback.feedback_id:
        feedback.feedback_id = derive_feedback_id(
            feedback.user_id, feedback.campaign_id, kind, ts_ms
        )
    return kind, occurred


@dataclass(slots=True)
class _Call:
    """One source call in flight (``future`` None: skipped, its breaker is open); its first
    outcome, its answer or its deadline, is the one counted (``SourceCall.finish``)."""

    future: Future[Any] | None
    deadline: float
    source: SourceCall


class RecommendationLog:
    """Writes what was served to ``recommendation_log`` from a background thread, and deletes
    rows older than the retention (``log_retention_days``) at start and every
    ``log_prune_every_s``, in chunks so that no statement holds the table long.

    Best effort: a failed batch is dropped with a warning (the log is an audit record); a
    failed prune is tried again at the next round.

    Fenced (``mpp.erasure.fence``): an answer served at or before its user's erasure is not
    written, even when it was queued before the erasure and is written after it.
    """

    PRUNE_CHUNK = 5000

    def __init__(
        self, postgres: PostgresSource, retention_days: int = 0, prune_every_s: float = 3600.0
    ) -> None:
        self._postgres = postgres
        self._retention_days = retention_days
        self._prune_every_s = prune_every_s
        self._next_prune = time.monotonic()
        self._queue: queue.Queue[tuple[str, R.RecommendResponse] | None] = queue.Queue(100_000)
        self._thread = threading.Thread(target=self._run, name="recommendation-log", daemon=True)
        self._thread.start()

    def prune(self, today: date | None = None) -> int:
        """Delete the rows of days before ``today`` (UTC) minus the retention; returns how
        many. Nothing when the retention is 0 (kept forever)."""
        if self._retention_days <= 0:
            return 0
        cutoff = (today or datetime.now(UTC).date()) - timedelta(days=self._retention_days)
        deleted = 0
        with self._postgres.pool.connection() as conn:
            while True:
                count = conn.execute(
                    "DELETE FROM recommendation_log WHERE ctid = ANY(ARRAY("
                    "SELECT ctid FROM recommendation_log WHERE day < %s LIMIT %s))",
                    (cutoff, self.PRUNE_CHUNK),
                ).rowcount
                deleted += count
                if count < self.PRUNE_CHUNK:
                    break
        if deleted:
            LOG_ROWS.labels(SERVICE, "pruned").inc(deleted)
            log.info("recommendation_log_pruned", rows=deleted, before=cutoff.isoformat())
        return deleted

    def _prune_when_due(self) -> None:
        if self._retention_days <= 0 or time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + self._prune_every_s
        try:
            self.prune()
        except Exception as exc:
            log.warning("recommendation_log_prune_failed", error=str(exc)[:300])

    def add(self, user_id: str, answer: R.RecommendResponse) -> None:
        try:
            self._queue.put_nowait((user_id, answer))
        except queue.Full:
            LOG_ROWS.labels(SERVICE, "dropped").inc(len(answer.items))

    def flush(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(10)

    def _run(self) -> None:
        while True:
            self._prune_when_due()
            try:
                first = self._queue.get(timeout=min(self._prune_every_s, 60.0))
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < 500:
                try:
                    batch.append(self._queue.get(timeout=0.05))
                except queue.Empty:
                    break
            entries = [b for b in batch if b is not None]
            try:
                if entries:
                    self._write(entries)
            finally:
                for _ in batch:
                    self._queue.task_done()
            if len(entries) < len(batch):
                return

    def _write(self, entries: list[tuple[str, R.RecommendResponse]]) -> None:
        rows = []
        for user_id, answer in entries:
            served = answer.generated_at.ToDatetime(tzinfo=UTC)
            for position, item in enumerate(answer.items):
                rows.append(
                    (
                        answer.recommendation_id,
                        item.campaign_id,
                        user_id,
                        position,
                        item.score,
                        answer.strategy,
                        served,
                        served.date(),
                    )
                )
        if not rows:
            return
        try:
            # COPY: a fraction of executemany's CPU, in the same process as the requests.
            # Rows never conflict: each answer has a new recommendation_id.
            with self._postgres.pool.connection() as conn, conn.transaction():
                erased = fence(conn, {row[2] for row in rows})
                if erased:
                    kept = [r for r in rows if r[2] not in erased or r[6] > erased[r[2]]]
                    LOG_ROWS.labels(SERVICE, "erased").inc(len(rows) - len(kept))
                    rows = kept
                with (
                    conn.cursor() as cur,
                    cur.copy(
                        "COPY recommendation_log (recommendation_id, campaign_id, user_id,"
                        " position, score, strategy, served_at, day) FROM STDIN"
                    ) as copy,
                ):
                    for row in rows:
                        copy.write_row(row)
        except Exception as exc:
            LOG_ROWS.labels(SERVICE, "dropped").inc(len(rows))
            log.warning("recommendation_log_failed", rows=len(rows), error=str(exc))
            return
        LOG_ROWS.labels(SERVICE, "written").inc(len(rows))


class Recommender:
    def __init__(self, settings: Settings, producer: TrackedProducer | None = None) -> None:
        self.settings = settings
        cfg = settings.recommender
        self.cfg = cfg
        self.cache = RedisCache(settings, on_change=_noted)
        self.postgres = PostgresSource(settings)
        self.milvus = MilvusSource(settings)
        self.neo4j = Neo4jSource(settings, catalog=lambda: self.postgres.catalog)
        self.graph = GraphStore(settings, driver=self.neo4j.driver)
        self.breakers = {
            name: CircuitBreaker(name, cfg.breaker_failures, cfg.breaker_reset_s, on_change=_noted)
            for name in ("milvus", "neo4j", "postgres")
        }
        self.timeouts = {
            "milvus": cfg.milvus_timeout_s,
            "neo4j": cfg.neo4j_timeout_s,
            "postgres": cfg.postgres_timeout_s,
        }
        self.weights = {
            "milvus": cfg.weight_milvus,
            "neo4j": cfg.weight_neo4j,
            "postgres": cfg.weight_postgres,
        }
        # Calls past their deadline keep a thread until their client gives up; the breakers
        # stop new calls to a store that keeps failing, which bounds them.
        self._pool = ThreadPoolExecutor(max_workers=4 * cfg.grpc_workers, thread_name_prefix="src")
        # Where the servers' event loop runs what blocks: cache misses, feedback, erasure.
        self.requests = ThreadPoolExecutor(max_workers=cfg.grpc_workers, thread_name_prefix="req")
        self.producer = producer or TrackedProducer(
            settings.kafka, service="recommender", **{"linger.ms": 0}
        )
        self.log = RecommendationLog(self.postgres, cfg.log_retention_days, cfg.log_prune_every_s)
        self._last: OrderedDict[str, bytes] = OrderedDict()
        self._last_lock = threading.Lock()
        # user_hash -> erasure time (epoch ms): sessions ignore older messages of these users.
        self.erased: dict[str, int] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Read the catalog and erased users once (the service starts anyway if it cannot)."""
        try:
            self.postgres.refresh_catalog(force=True)
            with self.postgres.pool.connection() as conn:
                for user_key, erased_at in conn.execute(
                    "SELECT user_hash, erased_at FROM erased_users"
                ):
                    self.erased[user_key] = int(erased_at.timestamp() * 1000)
        except Exception as exc:
            log.warning("catalog_unavailable_at_start", error=str(exc))
        # The first run of each query plans it (Neo4j: 0.3-0.8 s here); do it before serving.
        for name, warm in (
            ("neo4j", self.neo4j.warm_up),
            ("milvus", self.milvus.prepare),
            ("postgres", lambda: self.postgres.recommend("-warm-up-")),
        ):
            try:
                warm()
            except Exception as exc:
                log.warning("warm_up_failed", source=name, error=str(exc))

    def close(self) -> None:
        self.log.close()
        self.requests.shutdown(wait=True, cancel_futures=True)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.producer.flush(5)
        for closer in (self.cache.close, self.milvus.close, self.neo4j.close, self.postgres.close):
            try:
                closer()
            except Exception as exc:
                log.warning("close_failed", error=str(exc))

    # -- recommend ---------------------------------------------------------------------------

    def recommend(
        self, user_id: str, limit: int = 0, channel: str = "", locale: str = ""
    ) -> R.RecommendResponse:
        """The user's recommendations for a request shown on ``channel`` in ``locale`` (empty:
        not said; only campaigns that do not restrict it are then answered)."""
        check_user_id(user_id)
        limit = check_limit(limit, self.cfg.default_limit)
        check_target(channel, locale)
        cache = SourceCall("cache")
        lookup = self.cache.get_answer(user_id, answer_field(limit, channel, locale))
        answer = self._cached(cache, lookup)
        if answer is not None:
            return answer
        return self.compute(user_id, limit, channel, locale)

    async def recommend_async(
        self, user_id: str, limit: int = 0, channel: str = "", locale: str = ""
    ) -> R.RecommendResponse:
        """``recommend`` for the servers' event loop: a hit is one HGET on the loop; a miss
        is computed on the request threads."""
        check_user_id(user_id)
        limit = check_limit(limit, self.cfg.default_limit)
        check_target(channel, locale)
        cache = SourceCall("cache")
        lookup = await self.cache.get_answer_async(user_id, answer_field(limit, channel, locale))
        answer = self._cached(cache, lookup)
        if answer is not None:
            return answer
        # The request's context (its span: the sources' spans are its children) goes along.
        run = contextvars.copy_context().run
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.requests, run, self.compute, user_id, limit, channel, locale
        )

    @staticmethod
    def _cached(call: SourceCall, lookup: Lookup) -> R.RecommendResponse | None:
        """Record the cache lookup; the cached answer, if it was a hit."""
        call.finish_cache(lookup.outcome, reason_of(lookup.problem) if lookup.problem else None)
        if lookup.raw is None:
            return None
        answer = R.RecommendResponse.FromString(lookup.raw)
        answer.cached = True
        note_answer(answer.strategy, True, list(answer.degraded_sources), len(answer.items))
        return answer

    async def in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking call (feedback, erasure) on the request threads, in the caller's
        context (its span)."""
        run = contextvars.copy_context().run
        return await asyncio.get_running_loop().run_in_executor(self.requests, run, fn, *args)

    def _submit(self, name: str, fn: Callable[..., T], *args: Any) -> _Call:
        """Start a source call on the sources' threads, behind its breaker; its span is a
        child of the current (request) span."""
        source = SourceCall(SOURCE_OF_STORE[name])
        breaker = self.breakers[name]
        if not breaker.allow():
            source.finish("skipped", "breaker_open")
            return _Call(None, 0.0, source)

        def run() -> T:
            token = source.attach()
            try:
                result = fn(*args)
            except Exception as exc:
                # After the deadline the breaker has counted the failure already.
                if source.finish("degraded", "error", exc):
                    breaker.failure()
                log.warning("source_failed", source=name, error=str(exc)[:300])
                raise
            finally:
                source.detach(token)
            if source.finish("ok"):
                breaker.success()
            return result

        return _Call(self._pool.submit(run), time.monotonic() + self.timeouts[name], source)

    def _result(self, name: str, call: _Call) -> Any | None:
        if call.future is None:
            return None
        try:
            return call.future.result(timeout=max(0.0, call.deadline - time.monotonic()))
        except FutureTimeout:
            if not call.source.finish("degraded", "timeout"):
                # Its outcome came in just now: take it.
                return self._result_now(call.future)
            self.breakers[name].failure()
            log.warning("source_timed_out", source=name, after_s=self.timeouts[name])
            return None
        except Exception:
            return None

    @staticmethod
    def _result_now(future: Future[Any]) -> Any | None:
        try:
            return future.result()
        except Exception:
            return None

    def compute(
        self, user_id: str, limit: int, channel: str = "", locale: str = ""
    ) -> R.RecommendResponse:
        degraded: list[str] = []
        # The fence of the cache and of the in-process answers: an erasure after this instant
        # keeps this answer from being written back (``RedisCache.save``).
        started_ms = int(time.time() * 1000)
        session_call = SourceCall("session")
        session = self.cache.session(user_id)
        if session.head is None:
            degraded.append("redis")
            reason = reason_of(session.problem)
            session_call.finish("skipped" if reason == "breaker_open" else "degraded", reason)
        else:
            session_call.finish("ok")
        calls = {
            "milvus": self._submit(
                "milvus", self.milvus.recommend, user_id, session.messages, session.complete
            ),
            "neo4j": self._submit("neo4j", self.neo4j.recommend, user_id, session.messages),
            "postgres": self._submit("postgres", self.postgres.recommend, user_id),
        }
        results = {name: self._result(name, call) for name, call in calls.items()}
        degraded += [name for name, result in results.items() if result is None]
        postgres = results["postgres"]
        if postgres is None:
            return self._fallback(user_id, limit, degraded, channel, locale)

        popular, rules = postgres
        personal: dict[str, SourceAnswer] = {
            name: answer for name in ("milvus", "neo4j") if (answer := results[name]) is not None
        }
        if not personal:
            strategy = "popularity"
        elif not any(answer.knows_user for answer in personal.values()):
            strategy = "cold_start"
        else:
            strategy = "personalized"
        sources: dict[str, list[Candidate]] = {n: a.candidates for n, a in personal.items()}
        sources["postgres"] = popular
        now = datetime.now(UTC)
        catalog = self.postgres.catalog
        target = (channel, locale)
        ranked = apply_rules(blend(sources, self.weights), catalog, rules, now, *target)[:limit]
        if len(ranked) < limit:
            ranked += self._fillers(catalog, rules, now, ranked, limit, *target)
        answer = self._answer(user_id, ranked, catalog, degraded, strategy)
        ANSWERS.labels(SERVICE, strategy).inc()
        note_answer(strategy, False, degraded, len(answer.items))
        serialized = answer.SerializeToString()
        if session.head is not None:
            ttl = DEGRADED_TTL_S if degraded else self.cfg.cache_ttl_s
            milvus = personal.get("milvus")
            read = milvus.recent if milvus is not None else None
            field = answer_field(limit, channel, locale)
            self.cache.save(user_id, field, serialized, session.head, ttl, read, started_ms)
        if not self.is_erased(user_id, started_ms):
            self._remember(user_id, serialized)
        self.log.add(user_id, answer)
        return answer

    def _fillers(
        self,
        catalog: dict[str, CampaignInfo],
        rules: Any,
        now: datetime,
        ranked: list[Ranked],
        limit: int,
        channel: str = "",
        locale: str = "",
    ) -> list[Ranked]:
        """Live campaigns the sources did not propose, so a new user still gets a full list."""
        taken = {r.campaign_id for r in ranked}
        rest = [
            Ranked(
                c.campaign_id,
                0.0,
                [Reason("postgres", "catalog", "a live campaign of the catalog", 0.0)],
            )
            for c in sorted(catalog.values(), key=lambda c: c.campaign_id)
            if c.campaign_id not in taken
        ]
        return apply_rules(rest, catalog, rules, now, channel, locale)[: limit - len(ranked)]

    def _answer(
        self,
        user_id: str,
        ranked: list[Ranked],
        catalog: dict[str, CampaignInfo],
        degraded: list[str],
        strategy: str,
    ) -> R.RecommendResponse:
        answer = R.RecommendResponse(
            user_id=user_id,
            degraded_sources=degraded,
            recommendation_id=uuid.uuid4().hex,
            strategy=strategy,
        )
        answer.generated_at.GetCurrentTime()
        for item in ranked:
            info = catalog.get(item.campaign_id)
            answer.items.append(
                R.Recommendation(
                    campaign_id=item.campaign_id,
                    name=info.name if info else "",
                    score=round(item.score, 6),
                    reasons=[
                        R.Reason(
                            source=r.source,
                            kind=r.kind,
                            detail=r.detail,
                            score=round(r.score, 6),
                            intent=r.intent,
                            message_id=r.message_id,
                        )
                        for r in item.reasons
                    ],
                )
            )
        return answer

    def _remember(self, user_id: str, serialized: bytes) -> None:
        with self._last_lock:
            self._last[user_id] = serialized
            self._last.move_to_end(user_id)
            while len(self._last) > LAST_ANSWERS_IN_PROCESS:
                self._last.popitem(last=False)

    def _fallback(
        self, user_id: str, limit: int, degraded: list[str], channel: str = "", locale: str = ""
    ) -> R.RecommendResponse:
        """PostgreSQL is down: the last answer computed for the user, else a static list; both
        keep to the request's targeting as the last catalog read knows it."""
        catalog = self.postgres.catalog

        def shown(campaign_id: str) -> bool:
            info = catalog.get(campaign_id)
            return info is None or info.shown_on(channel, locale)

        raw = self.cache.get_last(user_id)
        if raw is None:
            with self._last_lock:
                raw = self._last.get(user_id)
        if raw is not None:
            answer = R.RecommendResponse.FromString(raw)
            kept = [item for item in answer.items if shown(item.campaign_id)][:limit]
            del answer.items[:]
            answer.items.extend(kept)
            generated = answer.generated_at.ToDatetime(tzinfo=UTC).isoformat()
            for item in answer.items:
                item.reasons.insert(
                    0,
                    R.Reason(
                        source="cache",
                        kind="last_answer",
                        detail=f"PostgreSQL is unavailable: the answer of {generated} "
                        f"({answer.recommendation_id})",
                        score=item.score,
                    ),
                )
            answer.cached = True
            answer.strategy = "cached_fallback"
        else:
            answer = R.RecommendResponse(
                user_id=user_id, recommendation_id=uuid.uuid4().hex, strategy="static_fallback"
            )
            answer.generated_at.GetCurrentTime()
            now = datetime.now(UTC)
            ids = self.cfg.fallback_campaigns or sorted(
                c.campaign_id for c in catalog.values() if c.is_live(now)
            )
            for campaign_id in [i for i in ids if shown(i)][:limit]:
                info = catalog.get(campaign_id)
                answer.items.append(
                    R.Recommendation(
                        campaign_id=campaign_id,
                        name=info.name if info else "",
                        score=0.0,
                        reasons=[
                            R.Reason(
                                source="fallback",
                                kind="static",
                                detail="PostgreSQL is unavailable and no earlier answer is "
                                "kept: a static list",
                            )
                        ],
                    )
                )
        del answer.degraded_sources[:]
        answer.degraded_sources.extend(degraded)
        ANSWERS.labels(SERVICE, answer.strategy).inc()
        note_answer(answer.strategy, answer.cached, degraded, len(answer.items))
        return answer

    # -- feedback ----------------------------------------------------------------------------

    def record_feedback(self, feedback: F.FeedbackEvent) -> str:
        """Validate, publish to the feedback topic (acknowledged), apply it to the rules at once.

        Returns the feedback_id (derived when the caller gave none, so that a retry of the
        same feedback is counted once). Raises InvalidArgument or Unavailable (Kafka down).
        """
        kind, occurred = check_feedback(feedback)
        if self.is_erased(feedback.user_id, feedback.timestamp.ToMilliseconds()):
            # Feedback of an erased user, stamped at or before the erasure, brings nothing
            # back: neither the topic nor the tables get it (the analytics and the ledger
            # would drop it too). The caller is answered as usual (a retry changes nothing).
            FEEDBACK_OF_ERASED.labels(SERVICE).inc()
            log.info("feedback_of_erased_user_dropped", feedback_id=feedback.feedback_id)
            return feedback.feedback_id
        try:
            self.producer.produce(
                self.settings.kafka.topics.feedback,
                feedback.SerializeToString(),
                key=feedback.user_id,
            )
            self.producer.flush(5.0)
        except (DeliveryError, Exception) as exc:
            raise Unavailable(f"kafka: feedback not recorded ({exc}); retry") from exc
        try:
            with self.postgres.pool.connection() as conn, conn.transaction():
                at = fence(conn, [feedback.user_id]).get(feedback.user_id)
                if at is not None and occurred <= at:
                    FEEDBACK_OF_ERASED.labels(SERVICE).inc()
                    return feedback.feedback_id
                conn.execute(
                    "INSERT INTO recommender_feedback (feedback_id, user_id, campaign_id, kind,"
                    " occurred_at, day) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (
                        feedback.feedback_id,
                        feedback.user_id,
                        feedback.campaign_id,
                        kind,
                        occurred,
                        occurred.date(),
                    ),
                )
        except Exception as exc:
            # The event is on the topic: analytics records it, and the rules apply it then.
            log.warning("feedback_not_recorded_locally", error=str(exc))
        capped = self.postgres.catalog.get(feedback.campaign_id)
        if kind in ("conversion", "dismissal") or (
            kind == "impression" and capped is not None and capped.daily_frequency_cap > 0
        ):
            self.cache.invalidate(feedback.user_id)
        return feedback.feedback_id

    # -- erasure -----------------------------------------------------------------------------

    def note_erased(self, user_id: str, at_ms: int) -> None:
        key = user_hash(user_id)
        self.erased[key] = max(self.erased.get(key, 0), at_ms)

    def is_erased(self, user_id: str, ts_ms: int) -> bool:
        """Whether ``ts_ms`` is at or before an erasure of the user that this process knows
        (its own, the erasure topic's, the ledger's at start; any key in use)."""
        at = max((self.erased.get(h, -1) for h in user_hashes(user_id)), default=-1)
        return at >= 0 and ts_ms <= at

    def forget_user(
        self, user_id: str, reason: str = "", requested_by: str = ""
    ) -> R.ForgetUserResponse:
        """Publish the erasure (acknowledged), then remove the user from every store.

        Raises Unavailable when the erasure cannot be published (nothing is removed; retry).
        Stores that cannot be reached now are listed in ``pending``: their writers remove the
        user when they read the published erasure.
        """
        check_user_id(user_id)
        if len(reason) > 1000:
            raise InvalidArgument("reason", "is longer than 1000 characters")
        request = F.ErasureRequest(
            request_id=uuid.uuid4().hex,
            user_id=user_id,
            requested_by=requested_by,
            reason=reason,
        )
        request.requested_at.GetCurrentTime()
        try:
            self.producer.produce(
                self.settings.kafka.topics.erasure, request.SerializeToString(), key=user_id
            )
            self.producer.flush(10.0)
        except Exception as exc:
            raise Unavailable(
                f"kafka: erasure not published ({exc}); nothing erased, retry"
            ) from exc
        erased_at = request.requested_at.ToDatetime(tzinfo=UTC)
        self.note_erased(user_id, request.requested_at.ToMilliseconds())
        with self._last_lock:
            self._last.pop(user_id, None)
        done: list[str] = []
        pending: list[str] = []
        steps: list[tuple[str, Callable[[], object]]] = [
            ("postgres", lambda: self._erase_postgres(user_id, request.request_id, erased_at)),
            ("redis", lambda: self.cache.delete_users([user_id])),
            ("milvus", lambda: self.milvus.store.delete_user(user_id)),
            ("neo4j", lambda: self.graph.delete_user(user_id)),
            ("warehouse", lambda: self._erase_warehouse(user_id)),
        ]
        for store, step in steps:
            try:
                step()
                done.append(store)
            except Exception as exc:
                pending.append(store)
                log.warning(
                    "erasure_pending", store=store, request_id=request.request_id, error=str(exc)
                )
        log.info("user_forgotten", request_id=request.request_id, erased_from=done, pending=pending)
        return R.ForgetUserResponse(
            request_id=request.request_id, erased_from=done, pending=pending
        )

    def _erase_postgres(self, user_id: str, request_id: str, erased_at: datetime) -> None:
        """The recommender's tables and the erasure record; the analytics facts too when the
        analytics library is not installed (else ``_erase_warehouse`` does it with its
        aggregates)."""
        with self.postgres.pool.connection() as conn, conn.transaction():
            record_erasure(conn, user_id, request_id, erased_at)
            tables = ["recommendation_log", "recommender_feedback"]
            if _analytics_erase() is None:
                tables += ["message_facts", "feedback_facts", "user_engagement"]
            for table in tables:
                conn.execute(f"DELETE FROM {table} WHERE user_id = %s", (user_id,))

    def _erase_warehouse(self, user_id: str) -> None:
        """Analytics facts, the aggregates they counted in, and the warehouse, through
        ``mpp.analytics.erase_user``. Raises when the warehouse could not be reached now (the
        erasure stays recorded there, and its next sync applies it)."""
        erase = _analytics_erase()
        if erase is None:
            raise RuntimeError("mpp.analytics is not installed; the analytics service erases")
        result = erase(self.settings, user_id, warehouse_timeout_s=WAREHOUSE_TIMEOUT_S)
        if result.warehouse_pending:
            raise RuntimeError("warehouse unreachable; its next sync applies the erasure")

    # -- readiness ---------------------------------------------------------------------------

    def store_states(self) -> dict[str, str]:
        states: dict[str, str] = {name: b.state for name, b in self.breakers.items()}
        states["redis"] = self.cache.breaker.state
        return states


def _analytics_erase() -> Callable[..., Any] | None:
    try:
        from mpp.analytics import erase_user
    except ImportError:
        return None
    return erase_user


def _noted(name: str, state: State) -> None:
    breaker_changed(name, state == "open")
    if state == "open":
        log.warning("breaker_opened", source=name)
    else:
        log.info("breaker_closed", source=name)
