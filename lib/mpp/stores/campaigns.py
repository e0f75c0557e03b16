"""The PostgreSQL ``campaigns`` table (migration 0001): the catalog's one reader and writer.

Every service reads campaigns through here: the embedder (live campaigns, to link messages),
the batch embed job (the same), the recommender (every campaign: names, dates, caps,
targeting) and ``mpp catalog load-campaigns`` (the upsert). Rows are ``mpp.catalog.Campaign``;
times are timezone-aware (``timestamptz``), lists are Postgres arrays.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg.rows import dict_row
from pydantic import ValidationError

from mpp.catalog import Campaign
from mpp.config import Settings
from mpp.logs import get_logger
from mpp.stores.clients import postgres_connect

log = get_logger("mpp.stores.campaigns")

# The table's columns, in the order the upsert writes them (a Campaign field each).
COLUMNS = (
    "campaign_id", "name", "description", "active", "starts_at", "ends_at", "tags", "intents",
    "daily_frequency_cap", "channels", "locales",
)  # fmt: skip


def select_sql(*, live_only: bool) -> str:
    """Every column of every campaign (``live_only``: those marked active), by campaign_id."""
    where = " WHERE active" if live_only else ""
    return f"SELECT {', '.join(COLUMNS)} FROM campaigns{where} ORDER BY campaign_id"


def read_campaigns(settings: Settings) -> list[Campaign]:
    """The active campaigns. A row the model refuses is logged and left out, not fatal: one
    bad row written by hand must not stop every service that links campaigns."""
    # Bounded like the connection: a stuck server must not stall the batch that refreshes.
    timeout_ms = settings.postgres.connect_timeout_s * 1000
    with (
        postgres_connect(
            settings, row_factory=dict_row, options=f"-c statement_timeout={timeout_ms}"
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute(select_sql(live_only=True).encode())
        rows = cur.fetchall()
    campaigns = []
    for row in rows:
        try:
            campaigns.append(Campaign.model_validate(row))
        except ValidationError as exc:
            log.warning("campaign_skipped", campaign_id=row.get("campaign_id"), error=str(exc))
    return campaigns


# By campaign_id; a row whose content is the same is not rewritten (updated_at stays).
_CONTENT = COLUMNS[1:]
UPSERT_SQL = (
    f"INSERT INTO campaigns ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))})"
    " ON CONFLICT (campaign_id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in _CONTENT)
    + ", updated_at = now()"
    + f" WHERE ({', '.join(f'campaigns.{c}' for c in _CONTENT)})"
    + f" IS DISTINCT FROM ({', '.join(f'EXCLUDED.{c}' for c in _CONTENT)})"
)


def upsert_campaigns(conn: psycopg.Connection[Any], campaigns: Iterable[Campaign]) -> int:
    """Insert or update campaigns by id (idempotent: loading the same catalog twice changes
    nothing); commits. Returns the number of campaigns given."""
    rows = [tuple(getattr(c, column) for column in COLUMNS) for c in campaigns]
    with conn.cursor() as cur:
        cur.executemany(UPSERT_SQL.encode(), rows)
    conn.commit()
    return len(rows)
