"""The analytics tables, declared once: names, columns, types, keys.

Every reader and writer of the analytics tables takes their shape from here: the PostgreSQL
store (``mpp.analytics.store``: insert column lists, the tables' keys), the warehouses
(``mpp.warehouse.sqlite`` and ``mpp.warehouse.bigquery`` create their tables from it), the
sync (``mpp.warehouse.sync``: which tables are facts, which aggregates, which columns) and the
Spark aggregation (``mpp_jobs.aggregate``: the facts' schemas). PostgreSQL's own schema is
its migrations (``mpp.db``, 0002 and 0003), which are never rewritten once applied;
``tests/unit/test_warehouse.py`` checks that they and this catalog agree column by column.

Types are the warehouse's logical ones (``ColumnType``); PostgreSQL holds them as
``POSTGRES_TYPES`` says. Times are aware and UTC, days are UTC dates, ``STRINGS`` a list of
strings. Columns that PostgreSQL keeps for its own bookkeeping (``bookkeeping``: when a fact
was recorded, when an aggregate was updated) are not part of a row's value and are not
copied to the warehouse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Row = dict[str, Any]
ColumnType = Literal["STRING", "INT64", "FLOAT64", "DATE", "TIMESTAMP", "STRINGS"]

# How PostgreSQL holds each type (``user_engagement.active_days`` is an ``integer`` there).
POSTGRES_TYPES: dict[ColumnType, tuple[str, ...]] = {
    "STRING": ("text",),
    "INT64": ("bigint", "integer"),
    "FLOAT64": ("double precision", "float8"),
    "DATE": ("date",),
    "TIMESTAMP": ("timestamptz",),
    "STRINGS": ("text[]",),
}


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: tuple[tuple[str, ColumnType], ...]
    key: tuple[str, ...]
    # The DATE column BigQuery partitions by (None: not partitioned).
    partition: str | None = None
    # Whether the table is rows keyed by an immutable id (loaded incrementally).
    fact: bool = False
    # PostgreSQL-only columns (not part of the value, never sent to the warehouse).
    bookkeeping: tuple[str, ...] = ()

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)

    def column_list(self) -> str:
        """The value columns as SQL lists them: ``a, b, c``."""
        return ", ".join(self.column_names)

    def postgres_record(self, *extra: str) -> str:
        """The columns as a ``jsonb_to_recordset`` alias declares them, then ``extra``
        (more ``name type`` declarations)."""
        return ", ".join([*(f"{n} {POSTGRES_TYPES[t][0]}" for n, t in self.columns), *extra])


_COUNTS: tuple[tuple[str, ColumnType], ...] = (
    ("messages", "INT64"),
    ("impressions", "INT64"),
    ("clicks", "INT64"),
    ("conversions", "INT64"),
    ("dismissals", "INT64"),
)

TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(
            "message_facts",
            (
                ("message_id", "STRING"),
                ("user_id", "STRING"),
                ("occurred_at", "TIMESTAMP"),
                ("day", "DATE"),
                ("channel", "STRING"),
                ("intents", "STRINGS"),
                ("campaign_ids", "STRINGS"),
            ),
            key=("message_id",),
            partition="day",
            fact=True,
            bookkeeping=("recorded_at",),
        ),
        TableSpec(
            "feedback_facts",
            (
                ("feedback_id", "STRING"),
                ("user_id", "STRING"),
                ("campaign_id", "STRING"),
                ("kind", "STRING"),
                ("occurred_at", "TIMESTAMP"),
                ("day", "DATE"),
                ("channel", "STRING"),
                ("recommendation_id", "STRING"),
            ),
            key=("feedback_id",),
            partition="day",
            fact=True,
            bookkeeping=("recorded_at",),
        ),
        TableSpec(
            "user_engagement",
            (
                ("user_id", "STRING"),
                ("messages", "INT64"),
                ("active_days", "INT64"),
                ("first_seen", "TIMESTAMP"),
                ("last_seen", "TIMESTAMP"),
                ("top_intents", "STRINGS"),
                ("campaigns_engaged", "STRINGS"),
            ),
            key=("user_id",),
            bookkeeping=("updated_at",),
        ),
        TableSpec(
            "campaign_performance_daily",
            (("campaign_id", "STRING"), ("day", "DATE"), *_COUNTS),
            key=("campaign_id", "day"),
            partition="day",
        ),
        TableSpec(
            "campaign_performance",
            (
                ("campaign_id", "STRING"),
                *_COUNTS,
                ("ctr", "FLOAT64"),
                ("conversion_rate", "FLOAT64"),
            ),
            key=("campaign_id",),
            bookkeeping=("updated_at",),
        ),
        TableSpec(
            "daily_activity",
            (
                ("day", "DATE"),
                ("channel", "STRING"),
                ("messages", "INT64"),
                ("active_users", "INT64"),
            ),
            key=("day", "channel"),
            partition="day",
        ),
    )
}
FACT_TABLES = tuple(name for name, t in TABLES.items() if t.fact)
AGGREGATE_TABLES = tuple(name for name, t in TABLES.items() if not t.fact)
# Tables holding a user_id that ``Warehouse.delete_user`` clears.
USER_TABLES = tuple(name for name, t in TABLES.items() if "user_id" in t.column_names)
# Columns that identify a row, per table (the warehouse merges by them too).
KEYS: dict[str, tuple[str, ...]] = {name: t.key for name, t in TABLES.items()}
# Bookkeeping columns that are not part of a row's value.
VOLATILE = frozenset(c for t in TABLES.values() for c in t.bookkeeping)
