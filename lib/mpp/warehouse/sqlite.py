"""The SQLite warehouse: one file, the local default.

Dates are ISO 8601 text, times ISO 8601 text in UTC, string lists JSON arrays; ``read`` turns
them back into Python values. ``upsert`` is ``INSERT ... ON CONFLICT DO UPDATE`` by the key;
``replace`` deletes and inserts in one transaction, so a reader sees the old or the new rows.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from mpp.warehouse import (
    TABLES,
    USER_TABLES,
    ColumnType,
    Row,
    TableSpec,
    Warehouse,
    WarehouseError,
    spec,
)

_SQL_TYPES: dict[ColumnType, str] = {
    "STRING": "TEXT",
    "INT64": "INTEGER",
    "FLOAT64": "REAL",
    "DATE": "TEXT",
    "TIMESTAMP": "TEXT",
    "STRINGS": "TEXT",
}


def _to_sqlite(kind: ColumnType, value: Any) -> Any:
    if value is None:
        return None
    if kind == "STRINGS":
        return json.dumps(list(value))
    if kind == "TIMESTAMP":
        if isinstance(value, datetime):
            return value.astimezone(UTC).isoformat()
        return datetime.fromisoformat(str(value)).astimezone(UTC).isoformat()
    if kind == "DATE":
        return value.isoformat() if isinstance(value, date) else str(value)
    return value


def _from_sqlite(kind: ColumnType, value: Any) -> Any:
    if value is None:
        return None
    if kind == "STRINGS":
        return list(json.loads(value))
    if kind == "TIMESTAMP":
        return datetime.fromisoformat(value).astimezone(UTC)
    if kind == "DATE":
        return date.fromisoformat(value)
    if kind == "FLOAT64":
        return float(value)
    return value


class SqliteWarehouse(Warehouse):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.id = f"sqlite:{path.resolve()}"
        with self._errors("open"):
            path.parent.mkdir(parents=True, exist_ok=True)
            # Transactions are explicit (``with self._conn``); the syncer's lock serializes
            # the threads that share the connection.
            self._conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            # Deleted rows are overwritten, not left readable in free pages: an erased user's
            # facts must not stay in the file (docs/security.md, erasure).
            self._conn.execute("PRAGMA secure_delete=ON")

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            raise WarehouseError(f"sqlite {what} ({self.path}): {exc}") from exc

    def ensure_schema(self) -> None:
        with self._errors("ensure_schema"), self._conn:
            for table in TABLES.values():
                columns = ", ".join(f"{n} {_SQL_TYPES[t]}" for n, t in table.columns)
                self._conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {table.name} ({columns},"
                    f" PRIMARY KEY ({', '.join(table.key)}))"
                )
                for column in ("user_id", table.partition):
                    if column and column in table.column_names and column not in table.key:
                        self._conn.execute(
                            f"CREATE INDEX IF NOT EXISTS {table.name}_{column}"
                            f" ON {table.name} ({column})"
                        )

    @staticmethod
    def _values(table: TableSpec, rows: Sequence[Row]) -> list[tuple[Any, ...]]:
        return [tuple(_to_sqlite(t, row.get(n)) for n, t in table.columns) for row in rows]

    def _insert_sql(self, table: TableSpec) -> str:
        names = table.column_names
        others = [n for n in names if n not in table.key]
        updates = ", ".join(f"{n} = excluded.{n}" for n in others)
        return (
            f"INSERT INTO {table.name} ({', '.join(names)})"
            f" VALUES ({', '.join('?' for _ in names)})"
            f" ON CONFLICT ({', '.join(table.key)}) DO UPDATE SET {updates}"
        )

    def upsert(self, table: str, rows: Sequence[Row]) -> int:
        t = spec(table)
        with self._errors(f"upsert {table}"), self._conn:
            self._conn.executemany(self._insert_sql(t), self._values(t, rows))
        return len(rows)

    def replace(self, table: str, rows: Sequence[Row]) -> int:
        t = spec(table)
        with self._errors(f"replace {table}"), self._conn:
            self._conn.execute(f"DELETE FROM {t.name}")
            self._conn.executemany(self._insert_sql(t), self._values(t, rows))
        return len(rows)

    def delete_user(self, user_ids: Sequence[str]) -> int:
        deleted = 0
        with self._errors("delete_user"), self._conn:
            for table in USER_TABLES:
                for user_id in user_ids:
                    cur = self._conn.execute(
                        f"DELETE FROM {table} WHERE user_id = ?",
                        (user_id,),
                    )
                    deleted += cur.rowcount
        with self._errors("delete_user checkpoint"):
            # The write-ahead log still holds the pages as they were before: written back
            # into the database (now zeroed where deleted) and truncated.
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return deleted

    def user_ids(self) -> set[str]:
        with self._errors("user_ids"):
            return {
                str(row[0])
                for table in USER_TABLES
                for row in self._conn.execute(f"SELECT DISTINCT user_id FROM {table}")
            }

    def read(self, table: str) -> list[Row]:
        t = spec(table)
        with self._errors(f"read {table}"):
            rows = self._conn.execute(
                f"SELECT {', '.join(t.column_names)} FROM {t.name} ORDER BY {', '.join(t.key)}"
            ).fetchall()
        return [
            {n: _from_sqlite(k, v) for (n, k), v in zip(t.columns, row, strict=True)}
            for row in rows
        ]

    def close(self) -> None:
        self._conn.close()
