"""The PostgreSQL candidate source: the catalog, popularity and the user's rules.

The catalog (live campaigns, names, caps) and popularity and performance
(``campaign_performance``: CTR, conversions, messages) are shared by all users and kept in
process, re-read every ``catalog_refresh_s`` / ``popularity_refresh_s``; the user's rules
(conversions, dismissals, today's impressions) are read per request. Each read is bounded by
the pool's timeout and a server-side statement timeout.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from psycopg_pool import ConnectionPool

from mpp.analytics.store import CAMPAIGN_PERFORMANCE_SQL
from mpp.config import Settings
from mpp.stores import campaigns
from mpp_recommender.blend import CampaignInfo, Candidate, Reason, UserRules

# Every campaign (inactive ones too: the blend says why it left one out), and the analytics
# service's campaign_performance, read as their stores write them.
CATALOG_SQL = campaigns.select_sql(live_only=False)
POPULARITY_SQL = CAMPAIGN_PERFORMANCE_SQL

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
            # One connection per request thread: a pool per worker process.
            max_size=rec.grpc_workers,
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
