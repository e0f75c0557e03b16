"""The analytics warehouse: one interface, two implementations chosen by configuration.

``MPP_WAREHOUSE__BACKEND=sqlite`` (the local default, a file under the stack folder) or
``bigquery`` (date-partitioned tables in ``MPP_WAREHOUSE__BIGQUERY_DATASET``; an emulator when
``MPP_WAREHOUSE__BIGQUERY_ENDPOINT`` is set). Both hold the same six tables as PostgreSQL's
analytics schema (``TABLES``, declared in ``mpp.warehouse.tables``), filled by
``mpp.warehouse.sync``.

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
from pathlib import Path

from mpp.config import Settings, WarehouseSettings
from mpp.warehouse.tables import TABLES, USER_TABLES, ColumnType, Row, TableSpec

__all__ = [
    "TABLES",
    "USER_TABLES",
    "ColumnType",
    "Row",
    "TableSpec",
    "Warehouse",
    "WarehouseError",
    "open_warehouse",
    "spec",
    "sqlite_path",
    "warehouse_id",
]


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
    """The SQLite file: a relative ``sqlite_path`` lies in the stack folder, and a relative
    stack folder in the checkout this library runs from (as ``mpp.stack`` resolves it; the
    dev tooling is not imported here, images do not ship it), else in the working folder
    (an image, where ``MPP_STACK__DIR`` is absolute anyway)."""
    path = settings.warehouse.sqlite_path
    if path.is_absolute():
        return path
    base = settings.stack.dir
    if not base.is_absolute():
        here = Path(__file__).resolve().parents
        checkout = [p for p in here if (p / "pyproject.toml").exists() and (p / "stack").is_dir()]
        base = (checkout[0] if checkout else Path.cwd()) / base
    return base / path


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
