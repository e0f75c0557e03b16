"""Reading the analytics tables in PostgreSQL: the reports behind ``mpp analytics report``,
the analytics service's pages and the tests.

Every function takes a connection and only reads. Rows come back as dicts of plain values:
times aware (UTC), days ``datetime.date``; ``jsonable`` turns them into JSON's strings.
``since`` is a UTC day, inclusive. Table names and keys are the catalog's
(``mpp.warehouse.tables``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from mpp.analytics.aggregates import campaign_totals
from mpp.analytics.store import CAMPAIGN_PERFORMANCE_SQL
from mpp.warehouse.tables import KEYS, TABLES, VOLATILE


def read_table(
    conn: psycopg.Connection[Any], table: str, *, volatile: bool = False
) -> list[dict[str, Any]]:
    """Every row of an analytics table, sorted by its key (``volatile``: with updated_at...)."""
    if table not in KEYS:
        raise ValueError(f"{table!r} is not an analytics table; one of {', '.join(KEYS)}")
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT * FROM {table} ORDER BY {', '.join(KEYS[table])}")
        rows = cur.fetchall()
    if not volatile:
        rows = [{k: v for k, v in row.items() if k not in VOLATILE} for row in rows]
    return rows


def campaign_report(
    conn: psycopg.Connection[Any], limit: int = 20, since: date | None = None
) -> list[dict[str, Any]]:
    """Campaigns by impressions then messages; totals over all days, or since a day."""
    order = "ORDER BY impressions DESC, messages DESC, campaign_id LIMIT %s"
    with conn.cursor(row_factory=dict_row) as cur:
        if since is None:
            cur.execute(f"{CAMPAIGN_PERFORMANCE_SQL} {order}", (limit,))
        else:
            cur.execute(f"{campaign_totals('day >= %s')} {order}", (since, limit))
        return cur.fetchall()


def campaign_daily(
    conn: psycopg.Connection[Any], campaign_ids: Sequence[str], since: date | None = None
) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"SELECT {TABLES['campaign_performance_daily'].column_list()}"
            " FROM campaign_performance_daily WHERE campaign_id = ANY(%s)"
            " AND day >= coalesce(%s, '-infinity'::date) ORDER BY campaign_id, day",
            (list(campaign_ids), since),
        )
        return cur.fetchall()


def activity_report(
    conn: psycopg.Connection[Any], since: date | None = None
) -> list[dict[str, Any]]:
    """Daily activity per channel, oldest day first."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT day, channel, messages, active_users FROM daily_activity"
            " WHERE day >= coalesce(%s, '-infinity'::date) ORDER BY day, channel",
            (since,),
        )
        return cur.fetchall()


def activity_totals(
    conn: psycopg.Connection[Any], since: date | None = None
) -> list[dict[str, Any]]:
    """Per day over all channels: messages and distinct active users (from the facts: a user
    active on two channels counts once)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            """SELECT day, sum(message)::bigint AS messages,
                      count(DISTINCT user_id) AS active_users
               FROM (SELECT day, user_id, 1 AS message FROM message_facts
                     WHERE day >= coalesce(%(since)s, '-infinity'::date)
                     UNION ALL
                     SELECT day, user_id, 0 FROM feedback_facts
                     WHERE day >= coalesce(%(since)s, '-infinity'::date)) e
               GROUP BY day ORDER BY day""",
            {"since": since},
        )
        return cur.fetchall()


def user_engagement(conn: psycopg.Connection[Any], user_id: str) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM user_engagement WHERE user_id = %s", (user_id,))
        return cur.fetchone()


def top_users(conn: psycopg.Connection[Any], limit: int = 10) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"SELECT {TABLES['user_engagement'].column_list()} FROM user_engagement"
            " ORDER BY messages DESC, active_days DESC, user_id LIMIT %s",
            (limit,),
        )
        return cur.fetchall()


def summary(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    row = conn.execute(
        """SELECT (SELECT count(*) FROM message_facts), (SELECT count(*) FROM feedback_facts),
                  (SELECT count(*) FROM user_engagement),
                  (SELECT count(*) FROM campaign_performance),
                  (SELECT min(day) FROM daily_activity), (SELECT max(day) FROM daily_activity)"""
    ).fetchone()
    assert row is not None
    return {
        "messages": row[0],
        "feedback_events": row[1],
        "users": row[2],
        "campaigns": row[3],
        "first_day": row[4],
        "last_day": row[5],
    }


def jsonable(value: Any) -> Any:
    """Dates and times as ISO 8601 strings (UTC), recursively."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value
