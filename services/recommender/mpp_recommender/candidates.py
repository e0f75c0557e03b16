"""Candidates and blend: the three sources of a computed answer and how they are combined.

- ``Candidates.gather``: Milvus (the user's vector), Neo4j (the user's intents and
  co-engagement) and PostgreSQL (popularity and the user's rules) are called concurrently,
  each within its own deadline and behind its circuit breaker. A source that failed, timed out
  or had its breaker open answers None; the caller names it in ``degraded_sources``.
- ``Candidates.answer``: with PostgreSQL's answer (the rules cannot be checked without it),
  the strategy (``personalized``; ``cold_start`` when neither Milvus nor Neo4j knows the user;
  ``popularity`` when both are down), the blend (``mpp_recommender.blend``), the rules, live
  campaigns of the catalog to fill the list up to the limit, and every item's reasons.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from mpp.config import RecommenderSettings
from mpp.logs import get_logger
from mpp.v1 import recommender_pb2 as R
from mpp_recommender.blend import (
    CampaignInfo,
    Candidate,
    Ranked,
    Reason,
    UserRules,
    apply_rules,
    blend,
)
from mpp_recommender.breaker import CircuitBreaker, State
from mpp_recommender.cache import Session, SessionMessage
from mpp_recommender.sources import MilvusSource, Neo4jSource, PostgresSource, SourceAnswer
from mpp_recommender.telemetry import SOURCE_OF_STORE, SourceCall

log = get_logger(__name__)
T = TypeVar("T")

SOURCES = ("milvus", "neo4j", "postgres")


@dataclass(slots=True)
class _Call:
    """One source call in flight (``future`` None: skipped, its breaker is open); its first
    outcome, its answer or its deadline, is the one counted (``SourceCall.finish``)."""

    future: Future[Any] | None
    deadline: float
    source: SourceCall


class Candidates:
    """The sources of a computed answer, their breakers and deadlines, and the blend.

    ``on_breaker_change`` is told when a breaker opens or closes. The sources' threads are
    this object's own: ``close`` stops them.
    """

    def __init__(
        self,
        milvus: MilvusSource,
        neo4j: Neo4jSource,
        postgres: PostgresSource,
        cfg: RecommenderSettings,
        on_breaker_change: Callable[[str, State], None] | None = None,
    ) -> None:
        self.milvus = milvus
        self.neo4j = neo4j
        self.postgres = postgres
        self.breakers = {
            name: CircuitBreaker(
                name, cfg.breaker_failures, cfg.breaker_reset_s, on_change=on_breaker_change
            )
            for name in SOURCES
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

    def close(self, wait: bool = False) -> None:
        """Stop the sources' threads; calls not started are cancelled, and those running are
        waited for only when ``wait`` (their clients' own timeouts bound them)."""
        self._pool.shutdown(wait=wait, cancel_futures=True)

    # -- the sources -------------------------------------------------------------------------

    def gather(self, user_id: str, session: Session) -> dict[str, Any | None]:
        """Each source's answer for the user (by name, in ``SOURCES`` order), None for a
        source that could not answer within its deadline. Never raises."""
        calls = {
            "milvus": self._submit(
                "milvus", self.milvus.recommend, user_id, session.messages, session.complete
            ),
            "neo4j": self._submit("neo4j", self.neo4j.recommend, user_id, session.messages),
            "postgres": self._submit("postgres", self.postgres.recommend, user_id),
        }
        return {name: self._result(name, call) for name, call in calls.items()}

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
                return _result_now(call.future)
            self.breakers[name].failure()
            log.warning("source_timed_out", source=name, after_s=self.timeouts[name])
            return None
        except Exception:
            return None

    # -- the blend ---------------------------------------------------------------------------

    def answer(
        self,
        user_id: str,
        popularity: tuple[list[Candidate], UserRules],
        results: dict[str, Any | None],
        limit: int,
        degraded: list[str],
        channel: str = "",
        locale: str = "",
    ) -> tuple[R.RecommendResponse, list[SessionMessage] | None]:
        """The answer from PostgreSQL's ``popularity`` (popular campaigns and the user's rules)
        and the other sources' ``results`` (``gather``), and the user's recent messages that
        Milvus read (None when it did not answer), for the session."""
        popular, rules = popularity
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
            ranked += _fillers(catalog, rules, now, ranked, limit, *target)
        milvus = personal.get("milvus")
        read = milvus.recent if milvus is not None else None
        return _answer(user_id, ranked, catalog, degraded, strategy), read


def _result_now(future: Future[Any]) -> Any | None:
    try:
        return future.result()
    except Exception:
        return None


def _fillers(
    catalog: dict[str, CampaignInfo],
    rules: UserRules,
    now: datetime,
    ranked: Sequence[Ranked],
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
    user_id: str,
    ranked: list[Ranked],
    catalog: dict[str, CampaignInfo],
    degraded: list[str],
    strategy: str,
) -> R.RecommendResponse:
    """The response for ``ranked``; every item is a campaign of ``catalog`` (``apply_rules``
    keeps no other), whose name it carries."""
    answer = R.RecommendResponse(
        user_id=user_id,
        degraded_sources=degraded,
        recommendation_id=uuid.uuid4().hex,
        strategy=strategy,
    )
    answer.generated_at.GetCurrentTime()
    for item in ranked:
        answer.items.append(
            R.Recommendation(
                campaign_id=item.campaign_id,
                name=catalog[item.campaign_id].name,
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
