"""The recommender's core, behind both front doors (gRPC and HTTP): recommend, feedback, erasure.

``Recommender`` composes the parts, each in its own module:

- ``answers`` (cache use): ``recommend`` is cache-aside: one HGET, a cached answer is returned
  as it is (``cached`` set); the user's session is read from Redis on a miss; PostgreSQL down
  (the rules cannot be checked): the last answer computed for the user (``cached_fallback``),
  else a static list (``static_fallback``);
- ``candidates`` (candidates and blend): on a miss the three sources run concurrently, each
  within its own deadline and behind its circuit breaker; with PostgreSQL's answer they are
  blended, the rules applied (live campaigns, no conversion or dismissal, daily caps) and the
  answer cached, unless the user said something new meanwhile. Strategy: ``personalized``;
  ``cold_start`` when neither Milvus nor Neo4j knows the user; ``popularity`` when both are
  down;
- ``feedback``: published to the feedback topic and applied to the rules at once;
- ``erasure``: a user forgotten in every store; the erasures this process knows fence what it
  writes afterwards;
- ``recommendation_log``: what was served (computed answers, not cache hits) goes to
  ``recommendation_log`` from a background thread, an audit record kept
  ``log_retention_days``; the daily frequency cap counts impressions (reported as feedback),
  see docs/recommender.md.

Every source that failed, timed out or had its breaker open is named in ``degraded_sources``
(``redis`` too when the cache could not be used). No outage of a store is an error for the
caller.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from mpp.config import Settings
from mpp.kafka import TrackedProducer
from mpp.logs import get_logger
from mpp.stores.neo4j import Neo4jGraphStore
from mpp.v1 import feedback_pb2 as F
from mpp.v1 import recommender_pb2 as R
from mpp_recommender.answers import AnswerCache
from mpp_recommender.cache import RedisCache
from mpp_recommender.candidates import Candidates
from mpp_recommender.checks import (
    InvalidArgument,
    Unavailable,
    check_limit,
    check_target,
    check_user_id,
)
from mpp_recommender.erasure import ErasedUsers, Eraser
from mpp_recommender.feedback import FeedbackRecorder
from mpp_recommender.recommendation_log import RecommendationLog
from mpp_recommender.sources import MilvusSource, Neo4jSource, PostgresSource
from mpp_recommender.telemetry import answer_served, note_breaker

# The names the front doors and the tests import from here.
__all__ = ["InvalidArgument", "RecommendationLog", "Recommender", "Unavailable"]

log = get_logger(__name__)
T = TypeVar("T")


class Recommender:
    """The stores' clients and the parts that use them; see the module's docstring.

    Thread-safe: ``recommend``, ``record_feedback`` and ``forget_user`` run on the request
    threads (``requests``) or the servers' event loop (``recommend_async``).
    """

    def __init__(self, settings: Settings, producer: TrackedProducer | None = None) -> None:
        self.settings = settings
        cfg = settings.recommender
        self.cfg = cfg
        self.cache = RedisCache(settings, on_change=note_breaker)
        self.postgres = PostgresSource(settings)
        self.milvus = MilvusSource(settings)
        self.neo4j = Neo4jSource(settings, catalog=lambda: self.postgres.catalog)
        self.graph = Neo4jGraphStore(settings, driver=self.neo4j.driver)
        self.candidates = Candidates(
            self.milvus, self.neo4j, self.postgres, cfg, on_breaker_change=note_breaker
        )
        # Where the servers' event loop runs what blocks: cache misses, feedback, erasure.
        self.requests = ThreadPoolExecutor(max_workers=cfg.grpc_workers, thread_name_prefix="req")
        self.producer = producer or TrackedProducer(
            settings.kafka, service="recommender", **{"linger.ms": 0}
        )
        self.log = RecommendationLog(self.postgres, cfg.log_retention_days, cfg.log_prune_every_s)
        self.answers = AnswerCache(self.cache, cfg, lambda: self.postgres.catalog)
        self.erased = ErasedUsers()
        self.eraser = Eraser(
            settings=settings,
            producer=self.producer,
            postgres=self.postgres,
            cache=self.cache,
            milvus=self.milvus,
            graph=self.graph,
            erased=self.erased,
            forget_answer=self.answers.forget,
        )
        self.feedback = FeedbackRecorder(
            topic=settings.kafka.topics.feedback,
            producer=self.producer,
            postgres=self.postgres,
            cache=self.cache,
            is_erased=self.erased.is_erased,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Read the catalog and erased users once (the service starts anyway if it cannot)."""
        try:
            self.postgres.refresh_catalog(force=True)
            self.erased.load(self.postgres)
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
        self.candidates.close()
        self.producer.flush(5)
        for closer in (self.cache.close, self.milvus.close, self.neo4j.close, self.postgres.close):
            try:
                closer()
            except Exception as exc:
                log.warning("close_failed", error=str(exc))

    # -- recommend ---------------------------------------------------------------------------

    def _checked_limit(self, user_id: str, limit: int, channel: str, locale: str) -> int:
        """Check a recommend request (InvalidArgument naming the field); the limit to use."""
        check_user_id(user_id)
        limit = check_limit(limit, self.cfg.default_limit)
        check_target(channel, locale)
        return limit

    def recommend(
        self, user_id: str, limit: int = 0, channel: str = "", locale: str = ""
    ) -> R.RecommendResponse:
        """The user's recommendations for a request shown on ``channel`` in ``locale`` (empty:
        not said; only campaigns that do not restrict it are then answered)."""
        limit = self._checked_limit(user_id, limit, channel, locale)
        answer = self.answers.lookup(user_id, limit, channel, locale)
        if answer is not None:
            return answer
        return self.compute(user_id, limit, channel, locale)

    async def recommend_async(
        self, user_id: str, limit: int = 0, channel: str = "", locale: str = ""
    ) -> R.RecommendResponse:
        """``recommend`` for the servers' event loop: a hit is one HGET on the loop; a miss
        is computed on the request threads."""
        limit = self._checked_limit(user_id, limit, channel, locale)
        answer = await self.answers.lookup_async(user_id, limit, channel, locale)
        if answer is not None:
            return answer
        # The request's context (its span: the sources' spans are its children) goes along.
        return await self.in_thread(self.compute, user_id, limit, channel, locale)

    async def in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking call (a cache miss, feedback, erasure) on the request threads, in
        the caller's context (its span)."""
        run = contextvars.copy_context().run
        return await asyncio.get_running_loop().run_in_executor(self.requests, run, fn, *args)

    def compute(
        self, user_id: str, limit: int, channel: str = "", locale: str = ""
    ) -> R.RecommendResponse:
        """A computed answer (a cache miss): the sources, blended and ruled, cached and
        logged; PostgreSQL down, the fallback answer."""
        # The fence of the cache and of the in-process answers: an erasure after this instant
        # keeps this answer from being written back (``RedisCache.save``).
        started_ms = int(time.time() * 1000)
        session = self.answers.session(user_id)
        degraded = ["redis"] if session.head is None else []
        results = self.candidates.gather(user_id, session)
        degraded += [name for name, result in results.items() if result is None]
        popularity = results["postgres"]
        if popularity is None:
            return self.answers.fallback(user_id, limit, degraded, channel, locale)
        answer, read = self.candidates.answer(
            user_id, popularity, results, limit, degraded, channel, locale
        )
        answer_served(answer)
        self.answers.keep(answer, session, limit, channel, locale, read, started_ms, self.is_erased)
        self.log.add(user_id, answer)
        return answer

    # -- feedback and erasure ----------------------------------------------------------------

    def record_feedback(self, feedback: F.FeedbackEvent) -> str:
        """``FeedbackRecorder.record``: the feedback_id; raises InvalidArgument or Unavailable."""
        return self.feedback.record(feedback)

    def note_erased(self, user_id: str, at_ms: int) -> None:
        """An erasure this process learned of (the topic, the ledger): from now on its
        feedback and session messages up to ``at_ms`` are ignored, and the answer kept in
        process for the PostgreSQL-down fallback is dropped."""
        self.erased.note(user_id, at_ms)
        self.answers.forget(user_id)

    def is_erased(self, user_id: str, ts_ms: int) -> bool:
        """``ErasedUsers.is_erased``."""
        return self.erased.is_erased(user_id, ts_ms)

    def forget_user(
        self, user_id: str, reason: str = "", requested_by: str = ""
    ) -> R.ForgetUserResponse:
        """``Eraser.forget_user``: raises InvalidArgument, or Unavailable when the erasure
        cannot be published (nothing is removed; retry)."""
        return self.eraser.forget_user(user_id, reason, requested_by)

    # -- readiness ---------------------------------------------------------------------------

    def store_states(self) -> dict[str, str]:
        states: dict[str, str] = {name: b.state for name, b in self.candidates.breakers.items()}
        states["redis"] = self.cache.breaker.state
        return states
