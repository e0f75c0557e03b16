"""The serving aggregates in PostgreSQL, recomputed from the facts for the keys a batch touched.

The definitions are ``mpp.analytics.facts``' (its docstring); here they are SQL. ``recompute``
deletes the touched keys' rows and inserts them again from the facts, inside the caller's
transaction (``mpp.analytics.store.write_batch`` holds the aggregate lock): a key that lost
all its facts keeps no row, and every row always equals a plain recomputation. The tables'
columns come from the catalog (``mpp.warehouse.tables``).
"""

from __future__ import annotations

from typing import Any

import psycopg

from mpp.analytics.facts import ENGAGING_KINDS, TOP_INTENTS, Touched
from mpp.warehouse.tables import POSTGRES_TYPES, TABLES

# The counts a campaign row sums over days.
COUNTS = tuple(
    name
    for name in TABLES["campaign_performance_daily"].column_names
    if name not in TABLES["campaign_performance_daily"].key
)
# ctr = clicks / impressions, conversion_rate = conversions / clicks, of counts summed over
# days (0 when the denominator is 0): the stored totals and reports over a range of days.
_RATES = """CASE WHEN sum(impressions) > 0 THEN sum(clicks)::float8 / sum(impressions) ELSE 0 END
           AS ctr,
       CASE WHEN sum(clicks) > 0 THEN sum(conversions)::float8 / sum(clicks) ELSE 0 END
           AS conversion_rate"""


def campaign_totals(where: str) -> str:
    """SQL: per campaign, ``campaign_performance``'s columns summed from the daily rows that
    ``where`` (a condition on ``campaign_performance_daily``) selects."""
    sums = ", ".join(f"sum({c})::bigint AS {c}" for c in COUNTS)
    return (
        f"SELECT campaign_id, {sums},\n       {_RATES}\n"
        f"FROM campaign_performance_daily WHERE {where} GROUP BY campaign_id"
    )


def _columns(table: str) -> str:
    return TABLES[table].column_list()


_RECOMPUTE_USERS = (
    """
DELETE FROM user_engagement WHERE user_id = ANY(%(users)s)
""",
    f"""
INSERT INTO user_engagement ({_columns("user_engagement")})
WITH events AS (
    SELECT user_id, occurred_at, day FROM message_facts WHERE user_id = ANY(%(users)s)
    UNION ALL
    SELECT user_id, occurred_at, day FROM feedback_facts WHERE user_id = ANY(%(users)s)
), span AS (
    SELECT user_id, count(DISTINCT day) AS active_days,
           min(occurred_at) AS first_seen, max(occurred_at) AS last_seen
    FROM events GROUP BY user_id
), messages AS (
    SELECT user_id, count(*) AS messages
    FROM message_facts WHERE user_id = ANY(%(users)s) GROUP BY user_id
), intent_counts AS (
    SELECT user_id, intent, count(*) AS n
    FROM message_facts, unnest(intents) AS intent
    WHERE user_id = ANY(%(users)s) GROUP BY user_id, intent
), top AS (
    SELECT user_id, (array_agg(intent ORDER BY n DESC, intent))[1:%(top)s] AS top_intents
    FROM intent_counts GROUP BY user_id
), engaged AS (
    SELECT user_id, array_agg(campaign_id ORDER BY campaign_id) AS campaigns
    FROM (
        SELECT user_id, unnest(campaign_ids) AS campaign_id
        FROM message_facts WHERE user_id = ANY(%(users)s)
        UNION
        SELECT user_id, campaign_id FROM feedback_facts
        WHERE user_id = ANY(%(users)s) AND kind = ANY(%(engaging)s)
    ) c GROUP BY user_id
)
SELECT span.user_id, coalesce(messages.messages, 0), span.active_days, span.first_seen,
       span.last_seen, coalesce(top.top_intents, '{{}}'), coalesce(engaged.campaigns, '{{}}')
FROM span
LEFT JOIN messages USING (user_id)
LEFT JOIN top USING (user_id)
LEFT JOIN engaged USING (user_id)
""",
)


def _recompute_touched(table: str, arrays: tuple[str, str], select: str) -> tuple[str, str]:
    """The two statements that recompute the touched keys of a table with a two-column key:
    the DELETE of their rows, and the INSERT of ``select``, which reads those keys as the rows
    of ``k`` (given as parallel array parameters, ``arrays``, in key order)."""
    spec = TABLES[table]
    types = dict(spec.columns)
    parts = [
        f"%({a})s::{POSTGRES_TYPES[types[c]][0]}[]" for a, c in zip(arrays, spec.key, strict=True)
    ]
    keys = f"unnest({', '.join(parts)}) AS k({', '.join(spec.key)})"
    match = " AND ".join(f"t.{c} = k.{c}" for c in spec.key)
    return (
        f"DELETE FROM {table} t USING {keys} WHERE {match}",
        f"INSERT INTO {table} ({_columns(table)})\nWITH k AS (SELECT * FROM {keys}),{select}",
    )


# The parameters that hold the touched keys of the two tables keyed by pairs.
_CAMPAIGN_DAYS = ("campaigns", "days")
_DAY_CHANNELS = ("days", "channels")

_RECOMPUTE_CAMPAIGN_DAYS = _recompute_touched(
    "campaign_performance_daily",
    _CAMPAIGN_DAYS,
    """ m AS (
    SELECT k.campaign_id, k.day, count(f.message_id) AS messages
    FROM k LEFT JOIN message_facts f
      ON f.day = k.day AND f.campaign_ids @> ARRAY[k.campaign_id]
    GROUP BY k.campaign_id, k.day
), fb AS (
    SELECT k.campaign_id, k.day,
           count(*) FILTER (WHERE f.kind = 'impression') AS impressions,
           count(*) FILTER (WHERE f.kind = 'click') AS clicks,
           count(*) FILTER (WHERE f.kind = 'conversion') AS conversions,
           count(*) FILTER (WHERE f.kind = 'dismissal') AS dismissals
    FROM k LEFT JOIN feedback_facts f ON f.campaign_id = k.campaign_id AND f.day = k.day
    GROUP BY k.campaign_id, k.day
)
SELECT campaign_id, day, m.messages, fb.impressions, fb.clicks, fb.conversions, fb.dismissals
FROM m JOIN fb USING (campaign_id, day)
WHERE m.messages + fb.impressions + fb.clicks + fb.conversions + fb.dismissals > 0
""",
)

_RECOMPUTE_CAMPAIGNS = (
    """
DELETE FROM campaign_performance WHERE campaign_id = ANY(%(campaigns)s)
""",
    f"""
INSERT INTO campaign_performance ({_columns("campaign_performance")})
{campaign_totals("campaign_id = ANY(%(campaigns)s)")}
""",
)

_RECOMPUTE_DAILY = _recompute_touched(
    "daily_activity",
    _DAY_CHANNELS,
    """ events AS (
    SELECT f.day, f.channel, f.user_id, 1 AS message
    FROM message_facts f JOIN k ON f.day = k.day AND f.channel = k.channel
    UNION ALL
    SELECT f.day, f.channel, f.user_id, 0
    FROM feedback_facts f JOIN k ON f.day = k.day AND f.channel = k.channel
)
SELECT day, channel, sum(message), count(DISTINCT user_id) FROM events GROUP BY day, channel
""",
)


def _arrays(keys: set[tuple[Any, Any]], names: tuple[str, str]) -> dict[str, list[Any]]:
    """Touched two-part keys as the parallel array parameters ``names``, sorted (a batch's
    statements do not depend on the order of a set)."""
    ordered = sorted(keys)
    return {names[0]: [a for a, _ in ordered], names[1]: [b for _, b in ordered]}


def _run(conn: psycopg.Connection[Any], statements: tuple[str, str], params: Any) -> None:
    # One statement per call: the extended protocol takes no multi-statement strings.
    for statement in statements:
        conn.execute(statement, params, prepare=False)


def recompute(conn: psycopg.Connection[Any], touched: Touched) -> None:
    """Recompute the aggregates of the touched keys from the facts (inside a transaction):
    delete their rows, insert them again from the facts (keys without facts stay deleted)."""
    if touched.users:
        _run(
            conn,
            _RECOMPUTE_USERS,
            {
                "users": sorted(touched.users),
                "top": TOP_INTENTS,
                "engaging": list(ENGAGING_KINDS),
            },
        )
    if touched.campaign_days:
        _run(conn, _RECOMPUTE_CAMPAIGN_DAYS, _arrays(touched.campaign_days, _CAMPAIGN_DAYS))
        _run(conn, _RECOMPUTE_CAMPAIGNS, {"campaigns": sorted(touched.campaigns)})
    if touched.day_channels:
        _run(conn, _RECOMPUTE_DAILY, _arrays(touched.day_channels, _DAY_CHANNELS))
