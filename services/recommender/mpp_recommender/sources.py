"""The three candidate sources, each a plain synchronous call bounded by its client's timeout.

- ``MilvusSource``: the user vector (recency-weighted mean of the user's recent message vectors,
  from the Redis session and Milvus) searched against the live campaign vectors. Each item names
  the user's message closest to the campaign.
- ``Neo4jSource``: the campaigns the user's intents point to (the catalog's ``intents``), the
  campaigns the user's own messages are ABOUT, and the campaigns engaged by users who share the
  user's intents or campaigns (co-engagement).
- ``PostgresSource``: the catalog (live campaigns, names, caps), popularity and performance
  (``campaign_performance``: CTR, conversions, messages), and the user's rules (conversions,
  dismissals, today's impressions). Catalog and popularity are shared by all users and kept in
  process, re-read every ``catalog_refresh_s`` / ``popularity_refresh_s``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, LiteralString

import neo4j
import numpy as np
from psycopg_pool import ConnectionPool
from pymilvus import MilvusClient

from mpp.config import Settings
from mpp.logs import get_logger
from mpp.stores import milvus_client
from mpp.vectors import VECTOR_FIELD, VectorStore
from mpp_recommender.blend import (
    CampaignInfo,
    Candidate,
    Reason,
    TimedVector,
    UserRules,
    user_vector,
)
from mpp_recommender.cache import SessionMessage

log = get_logger(__name__)


@dataclass(slots=True)
class SourceAnswer:
    candidates: list[Candidate] = field(default_factory=list)
    # Did the source hold anything about this user (messages)?
    knows_user: bool = False
    # Milvus: the user's recent messages it read (newest first), for the Redis session.
    recent: list[SessionMessage] | None = None


# -- Milvus -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Recent:
    message_id: str
    ts_ms: int
    embedding: np.ndarray
    intent: str


class MilvusSource:
    name = "milvus"

    def __init__(self, settings: Settings) -> None:
        cfg = settings.recommender
        # The recommender waits at most its own deadline, so its client gives up soon after.
        milvus = settings.milvus.model_copy(update={"timeout_s": max(cfg.milvus_timeout_s, 1.0)})
        self._settings = settings.model_copy(update={"milvus": milvus})
        self.store = VectorStore(self._settings)
        self._k = cfg.candidates_per_source
        self._recent = cfg.recent_messages
        self._half_life_s = cfg.recency_half_life_s
        self._refresh_s = cfg.catalog_refresh_s
        self._campaign_vectors: dict[str, np.ndarray] = {}
        self._vectors_read_at = -math.inf
        self._client: MilvusClient | None = None
        self._lock = threading.Lock()

    def prepare(self, dim: int | None = None) -> None:
        """Outside requests: learn the collections' dimension (so that reads skip a
        has_collection call each) and read the campaign vectors. ``dim`` None: from the
        campaigns collection, when it exists."""
        if self.store.dimension is not None:
            return
        if dim is None:
            if self._client is None:
                self._client = milvus_client(self._settings)
            name = self._settings.milvus.campaigns_collection
            if not self._client.has_collection(name):
                return
            fields = self._client.describe_collection(name).get("fields", [])
            dims = [int(f.get("params", {}).get("dim", 0)) for f in fields]
            dim = max(dims, default=0) or None
            if dim is None:
                return
        self.store.ensure_collections(dim)
        # Milvus Lite answers the first search of a collection in ~0.4 s (then ~1 ms): pay it
        # here rather than in a request's 0.25 s.
        self.store.search_campaigns([1.0 / math.sqrt(dim)] * dim, k=1)
        self._vectors_read_at = -math.inf
        self.campaign_vectors()

    def campaign_vectors(self) -> dict[str, np.ndarray]:
        """The campaigns' vectors for explanations, re-read every ``catalog_refresh_s``."""
        now = time.monotonic()
        if now - self._vectors_read_at < self._refresh_s:
            return self._campaign_vectors
        with self._lock:
            if now - self._vectors_read_at < self._refresh_s:
                return self._campaign_vectors
            self._vectors_read_at = now
            try:
                if self._client is None:
                    self._client = milvus_client(self._settings)
                rows = self._client.query(
                    self._settings.milvus.campaigns_collection,
                    filter="",
                    output_fields=["campaign_id", VECTOR_FIELD],
                    limit=16_384,
                    timeout=self._settings.milvus.timeout_s,
                )
                self._campaign_vectors = {
                    str(r["campaign_id"]): np.asarray(r[VECTOR_FIELD], dtype=np.float32)
                    for r in rows
                }
            except Exception as exc:
                log.warning("campaign_vectors_unavailable", error=str(exc))
        return self._campaign_vectors

    def recommend(
        self, user_id: str, session: Sequence[SessionMessage], complete: bool = False
    ) -> SourceAnswer:
        """``complete``: the session already holds the user's recent messages from Milvus."""
        by_id: dict[str, SessionMessage] = {m.message_id: m for m in session}
        read = not complete and len(by_id) < self._recent
        if read:
            for v in self.store.user_vectors(user_id, limit=self._recent):
                intent = v.top_intent if v.top_intent not in ("", "unknown") else ""
                by_id.setdefault(
                    v.message_id,
                    SessionMessage(
                        v.message_id,
                        v.ts_ms,
                        np.asarray(v.embedding, dtype=np.float32),
                        ((intent, v.top_intent_score),) if intent else (),
                    ),
                )
        ordered = sorted(by_id.values(), key=lambda m: (m.ts_ms, m.message_id), reverse=True)
        ordered = ordered[: self._recent]
        newest = [
            _Recent(m.message_id, m.ts_ms, m.embedding, m.intents[0][0] if m.intents else "")
            for m in ordered
        ]
        vector = user_vector([TimedVector(r.ts_ms, r.embedding) for r in newest], self._half_life_s)
        if vector is None:
            return SourceAnswer(recent=ordered if read else None)
        hits = self.store.search_campaigns(vector.tolist(), k=self._k)
        campaign_vectors = self.campaign_vectors()
        matrix = np.stack([r.embedding for r in newest])
        candidates = []
        for hit in hits:
            best = newest[0]
            cosine = hit.score
            campaign_vector = campaign_vectors.get(hit.campaign_id)
            if campaign_vector is not None and len(campaign_vector) == matrix.shape[1]:
                sims = matrix @ campaign_vector
                index = int(np.argmax(sims))
                best, cosine = newest[index], float(sims[index])
            candidates.append(
                Candidate(
                    hit.campaign_id,
                    hit.score,
                    [
                        Reason(
                            "milvus",
                            "similar_to_messages",
                            f"your recent messages are close to the campaign (cosine "
                            f"{hit.score:.2f}); closest: message {best.message_id} "
                            f"(cosine {cosine:.2f})",
                            hit.score,
                            intent=best.intent,
                            message_id=best.message_id,
                        )
                    ],
                )
            )
        return SourceAnswer(candidates, knows_user=True, recent=ordered if read else None)

    def close(self) -> None:
        self.store.close()
        if self._client is not None:
            self._client.close()


# -- Neo4j --------------------------------------------------------------------------------------

# The user's recent messages with their intents and campaigns.
USER_MESSAGES: LiteralString = """
MATCH (:User {id: $user_id})-[:SENT]->(m:Message)
WITH m ORDER BY m.ts DESC LIMIT $recent
OPTIONAL MATCH (m)-[hi:HAS_INTENT]->(i:Intent)
WITH m, collect([i.name, hi.score]) AS intents
OPTIONAL MATCH (m)-[a:ABOUT]->(c:Campaign)
RETURN m.id AS message_id, m.ts AS ts, intents, collect([c.id, a.score]) AS campaigns
"""

# Campaigns of users who share the user's intents or campaigns; each shared intent or campaign
# contributes at most $per_node peers, so a popular intent costs a bounded amount.
CO_ENGAGEMENT: LiteralString = """
MATCH (u:User {id: $user_id})-[:SENT]->(m:Message)
WITH u, m ORDER BY m.ts DESC LIMIT $recent
MATCH (m)-[:HAS_INTENT|ABOUT]->(x)
WITH u, collect(DISTINCT x) AS shared
UNWIND shared AS x
CALL (x, u) {
  MATCH (x)<-[:HAS_INTENT|ABOUT]-(:Message)<-[:SENT]-(v:User)
  WHERE v <> u
  RETURN DISTINCT v LIMIT $per_node
}
WITH u, v, collect(DISTINCT coalesce(x.name, x.id)) AS via
ORDER BY size(via) DESC LIMIT $peers
MATCH (v)-[:SENT]->(:Message)-[:ABOUT]->(c:Campaign)
WITH c, count(DISTINCT v) AS peers, collect(via[0])[0] AS via
RETURN c.id AS campaign_id, peers, via
ORDER BY peers DESC LIMIT $limit
"""


class Neo4jSource:
    name = "neo4j"

    def __init__(self, settings: Settings, catalog: Callable[[], Mapping[str, CampaignInfo]]):
        cfg = settings.neo4j
        rec = settings.recommender
        uri, tls = cfg.driver_args()
        self.driver = neo4j.GraphDatabase.driver(
            uri,
            auth=cfg.auth(),
            max_connection_pool_size=cfg.max_connection_pool_size,
            connection_timeout=max(rec.neo4j_timeout_s, 0.5),
            connection_acquisition_timeout=max(rec.neo4j_timeout_s * 2, 1.0),
            max_transaction_retry_time=0,
            **tls,
        )
        self._database = cfg.database
        self._timeout_s = max(rec.neo4j_timeout_s * 4, 1.0)
        self._recent = rec.recent_messages
        self._k = rec.candidates_per_source
        self._catalog = catalog

    def _run(self, query: LiteralString, **params: Any) -> list[neo4j.Record]:
        # An auto-commit read (RUN + PULL) rather than execute_query's managed transaction
        # (BEGIN, RUN, PULL, COMMIT): reads need no retry here, the breaker handles failures.
        with self.driver.session(
            database=self._database, default_access_mode=neo4j.READ_ACCESS
        ) as session:
            return list(session.run(neo4j.Query(query, timeout=self._timeout_s), params))

    def warm_up(self) -> None:
        """Run both queries once, so that Neo4j has planned them before the first request."""
        self._run(USER_MESSAGES, user_id="", recent=1)
        self._run(CO_ENGAGEMENT, user_id="", recent=1, per_node=1, peers=1, limit=1)

    def recommend(self, user_id: str, session: Sequence[SessionMessage]) -> SourceAnswer:
        messages = self._run(USER_MESSAGES, user_id=user_id, recent=self._recent)
        # intent -> (score, message_id), campaign -> (score, message_id); the session adds
        # messages the graph-writer has not written yet.
        intents: dict[str, tuple[float, str]] = {}
        about: dict[str, tuple[float, str]] = {}

        def note(target: dict[str, tuple[float, str]], key: Any, score: Any, mid: str) -> None:
            if key is None or key == "unknown":
                return
            value = float(score or 0.0)
            if key not in target or value > target[key][0]:
                target[str(key)] = (value, mid)

        for record in messages:
            for name, score in record["intents"]:
                note(intents, name, score, record["message_id"])
            for campaign_id, score in record["campaigns"]:
                note(about, campaign_id, score, record["message_id"])
        for message in session:
            for name, score in message.intents:
                note(intents, name, score, message.message_id)
            for campaign_id, score in message.campaigns:
                note(about, campaign_id, score, message.message_id)
        if not messages and not session:
            return SourceAnswer()

        found: dict[str, Candidate] = {}

        def add(campaign_id: str, score: float, reason: Reason) -> None:
            candidate = found.setdefault(campaign_id, Candidate(campaign_id, 0.0))
            candidate.score += score
            candidate.reasons.append(reason)

        for campaign in self._catalog().values():
            for intent in campaign.intents:
                if intent in intents:
                    score, mid = intents[intent]
                    add(
                        campaign.campaign_id,
                        score,
                        Reason(
                            "neo4j",
                            "intent_match",
                            f"you talked about {intent} (message {mid}, score {score:.2f}); "
                            f"the campaign targets {intent}",
                            score,
                            intent=intent,
                            message_id=mid,
                        ),
                    )
        for campaign_id, (score, mid) in about.items():
            add(
                campaign_id,
                score,
                Reason(
                    "neo4j",
                    "about_campaign",
                    f"your message {mid} is about this campaign (score {score:.2f})",
                    score,
                    message_id=mid,
                ),
            )
        if messages:
            peers = self._run(
                CO_ENGAGEMENT,
                user_id=user_id,
                recent=self._recent,
                per_node=50,
                peers=100,
                limit=self._k,
            )
            most = max((int(r["peers"]) for r in peers), default=0)
            for record in peers:
                share = 0.5 * int(record["peers"]) / most if most else 0.0
                via = str(record["via"] or "")
                add(
                    str(record["campaign_id"]),
                    share,
                    Reason(
                        "neo4j",
                        "co_engagement",
                        f"{record['peers']} users who share your interest in {via} talked "
                        "about this campaign",
                        share,
                        intent=via,
                    ),
                )
        ranked = sorted(found.values(), key=lambda c: -c.score)[: self._k]
        return SourceAnswer(ranked, knows_user=True)

    def close(self) -> None:
        self.driver.close()


# -- PostgreSQL ---------------------------------------------------------------------------------

CATALOG_SQL = """
SELECT campaign_id, name, active, starts_at, ends_at, intents, daily_frequency_cap, channels,
       locales
FROM campaigns
"""

POPULARITY_SQL = """
SELECT campaign_id, messages, impressions, clicks, conversions, ctr, conversion_rate
FROM campaign_performance
"""

# The user's conversions and dismissals (ever) and impressions today, from the analytics
# facts and the feedback received through this API, each feedback_id counted once.
USER_RULES_SQL = """
SELECT campaign_id, kind, count(DISTINCT feedback_id) FROM (
    SELECT feedback_id, campaign_id, kind, day FROM feedback_facts WHERE user_id = %(user)s
    UNION ALL
    SELECT feedback_id, campaign_id, kind, day FROM recommender_feedback WHERE user_id = %(user)s
) AS f
WHERE kind IN ('conversion', 'dismissal') OR (kind = 'impression' AND day = %(day)s)
GROUP BY campaign_id, kind
"""


def popularity_candidates(rows: Sequence[Mapping[str, Any]]) -> list[Candidate]:
    """Popularity and performance: smoothed CTR and conversion rate, and talk volume.

    score = (clicks + 1) / (impressions + 20) + 2 (conversions + 0.1) / (clicks + 10)
            + 0.01 log(1 + messages): the priors keep a campaign with 1 click out of 1
    impression from beating one with 400 out of 10,000.
    """
    out = []
    for row in rows:
        impressions, clicks = int(row["impressions"]), int(row["clicks"])
        conversions, messages = int(row["conversions"]), int(row["messages"])
        ctr = (clicks + 1) / (impressions + 20)
        conversion = (conversions + 0.1) / (clicks + 10)
        score = ctr + 2 * conversion + 0.01 * math.log1p(messages)
        out.append(
            Candidate(
                str(row["campaign_id"]),
                score,
                [
                    Reason(
                        "postgres",
                        "popular",
                        f"CTR {float(row['ctr']):.1%} ({clicks} clicks of {impressions} "
                        f"impressions), {conversions} conversions, {messages} messages",
                        score,
                    )
                ],
            )
        )
    out.sort(key=lambda c: (-c.score, c.campaign_id))
    return out


def rules_from_rows(rows: Sequence[tuple[str, str, int]]) -> UserRules:
    excluded: dict[str, str] = {}
    impressions: dict[str, int] = {}
    for campaign_id, kind, count in rows:
        if kind in ("conversion", "dismissal"):
            excluded.setdefault(campaign_id, kind)
        elif kind == "impression":
            impressions[campaign_id] = int(count)
    return UserRules(excluded, impressions)


class PostgresSource:
    name = "postgres"

    def __init__(self, settings: Settings) -> None:
        rec = settings.recommender
        # Statements are cut server-side too, so a slow PostgreSQL frees its connections.
        statement_timeout_ms = int(max(rec.postgres_timeout_s * 4, 1.0) * 1000)
        self.pool = ConnectionPool(
            settings.postgres.conninfo(),
            min_size=1,
            max_size=8,
            timeout=max(rec.postgres_timeout_s * 2, 1.0),
            open=False,
            kwargs={"autocommit": True, "options": f"-c statement_timeout={statement_timeout_ms}"},
            name="recommender",
        )
        self.pool.open(wait=False)
        self._catalog_refresh_s = rec.catalog_refresh_s
        self._popularity_refresh_s = rec.popularity_refresh_s
        self._k = rec.candidates_per_source
        self.catalog: dict[str, CampaignInfo] = {}
        self.catalog_loaded = False
        self._catalog_at = -math.inf
        self._popular: list[Candidate] = []
        self._popular_at = -math.inf
        self._lock = threading.Lock()

    def _query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Any]:
        with self.pool.connection() as conn:
            cur = conn.execute(sql.encode(), params)
            columns = [c.name for c in cur.description or ()]
            return [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]

    def refresh_catalog(self, force: bool = False) -> dict[str, CampaignInfo]:
        """The catalog, re-read when due; a failed read keeps the last one and raises."""
        now = time.monotonic()
        if not force and now - self._catalog_at < self._catalog_refresh_s:
            return self.catalog
        with self._lock:
            if not force and now - self._catalog_at < self._catalog_refresh_s:
                return self.catalog
            rows = self._query(CATALOG_SQL)
            self.catalog = {
                r["campaign_id"]: CampaignInfo(
                    campaign_id=r["campaign_id"],
                    name=r["name"],
                    active=r["active"],
                    starts_at=r["starts_at"],
                    ends_at=r["ends_at"],
                    intents=tuple(r["intents"] or ()),
                    daily_frequency_cap=int(r["daily_frequency_cap"]),
                    channels=tuple(r["channels"] or ()),
                    locales=tuple(r["locales"] or ()),
                )
                for r in rows
            }
            self.catalog_loaded = True
            self._catalog_at = now
        return self.catalog

    def popular(self, force: bool = False) -> list[Candidate]:
        """Popular campaigns, re-read when due (or ``force``); raises when PostgreSQL fails."""
        now = time.monotonic()
        if force or now - self._popular_at >= self._popularity_refresh_s:
            with self._lock:
                if force or now - self._popular_at >= self._popularity_refresh_s:
                    self._popular = popularity_candidates(self._query(POPULARITY_SQL))
                    self._popular_at = now
        return self._popular[: self._k]

    def recommend(self, user_id: str) -> tuple[list[Candidate], UserRules]:
        """Popular campaigns and the user's rules; raises when PostgreSQL cannot answer."""
        self.refresh_catalog()
        popular = self.popular()
        today = datetime.now(UTC).date()
        with self.pool.connection() as conn:
            rows = conn.execute(USER_RULES_SQL.encode(), {"user": user_id, "day": today}).fetchall()
        return popular, rules_from_rows(rows)

    def close(self) -> None:
        self.pool.close()
