"""Cache use: the recommender's answers kept in Redis (cache-aside) and in process, the
user's session read from Redis, and the answers given when PostgreSQL is down.

- ``lookup``: one HGET; a cached answer is returned as it is (``cached`` set).
- ``session``: the user's recent messages (Redis down: no session, the caller names ``redis``
  among the degraded sources).
- ``keep``: a computed answer is cached (``DEGRADED_TTL_S`` when a store was missing, else
  ``cache_ttl_s``) unless the user said something new meanwhile or was erased since
  (``RedisCache.save``), and kept in process for the fallback.
- ``fallback``: PostgreSQL is down, so the rules cannot be checked: the last answer computed
  for the user (``cached_fallback``, from Redis, else this process), else a static list
  (``static_fallback``: ``fallback_campaigns``, else the live campaigns of the last catalog).
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime

from mpp.config import RecommenderSettings
from mpp.v1 import recommender_pb2 as R
from mpp_recommender.blend import CampaignInfo
from mpp_recommender.cache import Lookup, RedisCache, Session, SessionMessage, answer_field
from mpp_recommender.telemetry import SourceCall, answer_served, note_answer, reason_of

# Degraded answers are cached briefly: long enough to spare a struggling store under load,
# short enough that a recovered store is used again soon.
DEGRADED_TTL_S = 5
LAST_ANSWERS_IN_PROCESS = 10_000


class AnswerCache:
    """The answers of ``cache`` (Redis) and of this process; ``catalog`` gives the last
    catalog read, whose targeting the fallback answers keep to.

    Thread-safe: the in-process answers are shared by the request threads.
    """

    def __init__(
        self,
        cache: RedisCache,
        cfg: RecommenderSettings,
        catalog: Callable[[], dict[str, CampaignInfo]],
    ) -> None:
        self.cache = cache
        self._ttl_s = cfg.cache_ttl_s
        self._fallback_campaigns = cfg.fallback_campaigns
        self._catalog = catalog
        self._last: OrderedDict[str, bytes] = OrderedDict()
        self._last_lock = threading.Lock()

    # -- cache-aside -------------------------------------------------------------------------

    def lookup(
        self, user_id: str, limit: int, channel: str, locale: str
    ) -> R.RecommendResponse | None:
        """The cached answer for this request, None on a miss (or Redis down)."""
        call = SourceCall("cache")
        return _cached(call, self.cache.get_answer(user_id, answer_field(limit, channel, locale)))

    async def lookup_async(
        self, user_id: str, limit: int, channel: str, locale: str
    ) -> R.RecommendResponse | None:
        """``lookup`` on the servers' event loop."""
        call = SourceCall("cache")
        field = answer_field(limit, channel, locale)
        return _cached(call, await self.cache.get_answer_async(user_id, field))

    def session(self, user_id: str) -> Session:
        """The user's session; its ``head`` is None when Redis could not be read."""
        call = SourceCall("session")
        session = self.cache.session(user_id)
        if session.head is None:
            reason = reason_of(session.problem)
            call.finish("skipped" if reason == "breaker_open" else "degraded", reason)
        else:
            call.finish("ok")
        return session

    def keep(
        self,
        answer: R.RecommendResponse,
        session: Session,
        limit: int,
        channel: str,
        locale: str,
        read: list[SessionMessage] | None,
        started_ms: int,
        is_erased: Callable[[str, int], bool],
    ) -> None:
        """Cache a computed ``answer`` (when the session was read: its head fences the write)
        with the messages Milvus ``read``, and keep it in process unless the user was erased
        since the request started (``started_ms``; ``is_erased`` as ``ErasedUsers``)."""
        serialized = answer.SerializeToString()
        user_id = answer.user_id
        if session.head is not None:
            ttl = DEGRADED_TTL_S if answer.degraded_sources else self._ttl_s
            field = answer_field(limit, channel, locale)
            self.cache.save(user_id, field, serialized, session.head, ttl, read, started_ms)
        if not is_erased(user_id, started_ms):
            with self._last_lock:
                self._last[user_id] = serialized
                self._last.move_to_end(user_id)
                while len(self._last) > LAST_ANSWERS_IN_PROCESS:
                    self._last.popitem(last=False)

    def forget(self, user_id: str) -> None:
        """Drop the user's answer kept in process (erasure)."""
        with self._last_lock:
            self._last.pop(user_id, None)

    # -- PostgreSQL down ---------------------------------------------------------------------

    def fallback(
        self, user_id: str, limit: int, degraded: list[str], channel: str = "", locale: str = ""
    ) -> R.RecommendResponse:
        """PostgreSQL is down: the last answer computed for the user, else a static list; both
        keep to the request's targeting as the last catalog read knows it."""
        catalog = self._catalog()

        def shown(campaign_id: str) -> bool:
            info = catalog.get(campaign_id)
            return info is None or info.shown_on(channel, locale)

        raw = self.cache.get_last(user_id)
        if raw is None:
            with self._last_lock:
                raw = self._last.get(user_id)
        if raw is not None:
            answer = _last_answer(raw, shown, limit)
        else:
            now = datetime.now(UTC)
            ids = self._fallback_campaigns or sorted(
                c.campaign_id for c in catalog.values() if c.is_live(now)
            )
            answer = _static_answer(user_id, [i for i in ids if shown(i)][:limit], catalog)
        del answer.degraded_sources[:]
        answer.degraded_sources.extend(degraded)
        answer_served(answer)
        return answer


def _cached(call: SourceCall, lookup: Lookup) -> R.RecommendResponse | None:
    """Record the cache lookup; the cached answer, if it was a hit."""
    call.finish_cache(lookup.outcome, reason_of(lookup.problem) if lookup.problem else None)
    if lookup.raw is None:
        return None
    answer = R.RecommendResponse.FromString(lookup.raw)
    answer.cached = True
    note_answer(answer.strategy, True, list(answer.degraded_sources), len(answer.items))
    return answer


def _last_answer(raw: bytes, shown: Callable[[str], bool], limit: int) -> R.RecommendResponse:
    """The answer kept for the user, its items still ``shown``, each explained as the
    answer of its time."""
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
    return answer


def _static_answer(
    user_id: str, campaign_ids: list[str], catalog: dict[str, CampaignInfo]
) -> R.RecommendResponse:
    """The static list: ``campaign_ids`` as they are (a configured campaign need not be in
    the catalog: its name is then empty)."""
    answer = R.RecommendResponse(
        user_id=user_id, recommendation_id=uuid.uuid4().hex, strategy="static_fallback"
    )
    answer.generated_at.GetCurrentTime()
    for campaign_id in campaign_ids:
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
    return answer
