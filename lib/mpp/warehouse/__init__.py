"""The analytics warehouse: one interface, two implementations chosen by configuration.

``MPP_WAREHOUSE__BACKEND=sqlite`` (the local default, a file under the stack folder) or
``bigquery`` (date-partitioned tables in ``MPP_WAREHOUSE__BIGQUERY_DATASET``; an emulator when
``MPP_WAREHOUSE__BIGQUERY_ENDPOINT`` is set). Both hold the same six tables as PostgreSQL's
analytics schema (``TABLES``), filled by ``mpp.warehouse.sync``.

Rules every implementation keeps:
- ``upsert`` merges rows by the table's key: sending the same rows twice changes nothing.
- ``replace`` makes the table hold exactly the given rows (aggregates, which may lose keys
  when a user is erased), atomically for readers.
- ``delete_user`` removes a user's facts and engagement row; handling it twice is harmless.
- Values: ``str``, ``int``, ``float``, ``datetime.date``, aware ``datetime`` (UTC) and
  ``list[str]``; ``read`` gives them back as such, sorted by the key.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mpp.config import Settings, WarehouseSettings

Row = dict[str, Any]
ColumnType = Literal["STRING", "INT64", "FLOAT64", "DATE", "TIMESTAMP", "STRINGS"]


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: tuple[tuple[str, ColumnType], ...]
    key: tuple[str, ...]
    # The DATE column BigQuery partitions by (None: not partitioned).
    partition: str | None = None
    # Whether the table is rows keyed by an immutable id (loaded incrementally).
    fact: bool = False

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)


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
        ),
        TableSpec(
            "campaign_performance_daily",
            (
                ("campaign_id", "STRING"),
                ("day", "DATE"),
                ("messages", "INT64"),
                ("impressions", "INT64"),
                ("clicks", "INT64"),
                ("conversions", "INT64"),
                ("dismissals", "INT64"),
            ),
            key=("campaign_id", "day"),
            partition="day",
        ),
        TableSpec(
            "campaign_performance",
            (
                ("campaign_id", "STRING"),
                ("messages", "INT64"),
                ("impressions", "INT64"),
                ("clicks", "INT64"),
                ("conversions", "INT64"),
                ("dismissals", "INT64"),
                ("ctr", "FLOAT64"),
                ("conversion_rate", "FLOAT64"),
            ),
            key=("campaign_id",),
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
# Tables holding a user_id that ``delete_user`` clears.
USER_TABLES = ("message_facts", "feedback_facts", "user_engagement")


class WarehouseError(RuntimeError):
    """The warehouse refused or could not be reached; the message names it."""


class Warehouse(ABC):
    """An analytics warehouse (see the module's rules)."""

    #: Names this warehouse in PostgreSQL's sync bookkeeping ("sqlite:/path", ...).
    id: str

    @abstractmethod
    def ensure_schema(self) -> None:
        """Create the dataset and tables that are missing (idempotent)."""

    @abstractmethod
    def upsert(self, table: str, rows: Sequence[Row]) -> int:
        """Merge rows by the table's key; returns the rows sent."""

    @abstractmethod
    def replace(self, table: str, rows: Sequence[Row]) -> int:
        """Make the table hold exactly ``rows``; returns their number."""

    @abstractmethod
    def delete_user(self, user_ids: Sequence[str]) -> int:
        """Remove the users' facts and engagement rows; returns the rows deleted."""

    @abstractmethod
    def read(self, table: str) -> list[Row]:
        """Every row of a table, sorted by its key."""

    def user_ids(self) -> set[str]:
        """Every user_id the warehouse holds (the batch erasure, ``mpp_jobs.erase``, looks
        them up in the erasure ledger). Reads the user tables whole; a backend may do better."""
        return {str(row["user_id"]) for table in USER_TABLES for row in self.read(table)}

    def close(self) -> None:  # noqa: B027 - optional
        """Release connections."""


def sqlite_path(settings: Settings) -> Path:
    path = settings.warehouse.sqlite_path
    if path.is_absolute():
        return path
    try:
        from mpp.stack import stack_dir
    except ModuleNotFoundError:  # an image: no local stack; MPP_STACK__DIR is absolute there
        base = settings.stack.dir
        return (base if base.is_absolute() else Path.cwd() / base) / path
    return stack_dir(settings) / path


def warehouse_id(settings: Settings) -> str:
    """The configured warehouse's name, without connecting to it."""
    cfg: WarehouseSettings = settings.warehouse
    if cfg.backend == "bigquery":
        return f"bigquery:{cfg.bigquery_project}.{cfg.bigquery_dataset}"
    return f"sqlite:{sqlite_path(settings).resolve()}"


def open_warehouse(settings: Settings) -> Warehouse:
    """The configured warehouse, its schema ensured."""
    warehouse: Warehouse
    if settings.warehouse.backend == "bigquery":
        from mpp.warehouse.bigquery import BigQueryWarehouse

        warehouse = BigQueryWarehouse(settings.warehouse)
    else:
        from mpp.warehouse.sqlite import SqliteWarehouse

        warehouse = SqliteWarehouse(sqlite_path(settings))
    warehouse.ensure_schema()
    return warehouse


def spec(table: str) -> TableSpec:
    try:
        return TABLES[table]
    except KeyError:
        raise WarehouseError(
            f"{table!r} is not a warehouse table; one of {', '.join(TABLES)}"
        ) from None
