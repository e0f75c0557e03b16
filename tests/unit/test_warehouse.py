"""The warehouse interface on SQLite (a file, no server), and that the table catalog
(``mpp.warehouse.tables``) is the PostgreSQL migrations' schema."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path

import pytest

from mpp.analytics import erase_user
from mpp.config import Settings, WarehouseSettings
from mpp.warehouse import TABLES, WarehouseError, warehouse_id
from mpp.warehouse.bigquery import schema
from mpp.warehouse.sqlite import SqliteWarehouse
from mpp.warehouse.tables import FACT_TABLES, POSTGRES_TYPES, USER_TABLES, VOLATILE

NOW = datetime(2026, 11, 28, 23, 59, 59, 123456, tzinfo=UTC)


def postgres_tables() -> dict[str, tuple[list[tuple[str, str]], tuple[str, ...], list[str]]]:
    """The analytics tables as the migrations create them: (value columns with their types,
    primary key, bookkeeping columns), from the SQL itself."""
    sql = resources.files("mpp.db").joinpath("migrations/0002_analytics.sql").read_text()
    tables = {}
    for name, body in re.findall(r"CREATE TABLE (\w+) \((.*?)\n\);", sql, re.S):
        columns: list[tuple[str, str]] = []
        key: tuple[str, ...] = ()
        for line in body.splitlines():
            line = line.split("--")[0].strip().rstrip(",")
            if not line or line.startswith("CHECK"):
                continue
            if line.startswith("PRIMARY KEY"):
                key = tuple(c.strip() for c in line[line.index("(") + 1 : -1].split(","))
                continue
            column, kind = line.split()[:2]
            if "PRIMARY KEY" in line:
                key = (column,)
            kind = "double precision" if kind == "double" else kind
            columns.append((column, kind))
        bookkeeping = [c for c, _ in columns if c in {"recorded_at", "updated_at"}]
        values = [(c, k) for c, k in columns if c not in bookkeeping]
        tables[name] = (values, key, bookkeeping)
    return tables


def test_the_catalog_is_the_postgres_migrations_schema() -> None:
    """The migrations are applied as written, never regenerated: the catalog that every
    other reader takes the tables from must agree with them, column by column."""
    postgres = postgres_tables()
    assert list(postgres) == list(TABLES)
    for name, table in TABLES.items():
        columns, key, bookkeeping = postgres[name]
        assert [c for c, _ in columns] == list(table.column_names), name
        for (column, pg_type), (_, kind) in zip(columns, table.columns, strict=True):
            assert pg_type in POSTGRES_TYPES[kind], (name, column, pg_type, kind)
        assert key == table.key, name
        assert bookkeeping == list(table.bookkeeping), name
    assert FACT_TABLES == ("message_facts", "feedback_facts")
    assert USER_TABLES == ("message_facts", "feedback_facts", "user_engagement")
    assert {"recorded_at", "updated_at"} == VOLATILE


def test_bigquery_schema_repeats_lists_and_requires_keys() -> None:
    fields = {f.name: f for f in schema(TABLES["message_facts"])}
    assert fields["intents"].mode == "REPEATED" and fields["intents"].field_type == "STRING"
    assert fields["message_id"].mode == "REQUIRED"
    assert fields["occurred_at"].field_type == "TIMESTAMP"
    assert TABLES["daily_activity"].partition == "day"
    assert TABLES["campaign_performance"].partition is None


def test_warehouse_ids_name_the_configured_target(tmp_path: Path) -> None:
    settings = Settings(warehouse=WarehouseSettings(sqlite_path=tmp_path / "w.sqlite"))
    assert warehouse_id(settings) == f"sqlite:{tmp_path / 'w.sqlite'}"
    bigquery = Settings(
        warehouse=WarehouseSettings(backend="bigquery", bigquery_project="p", bigquery_dataset="d")
    )
    assert warehouse_id(bigquery) == "bigquery:p.d"


def test_sqlite_upserts_replaces_deletes_and_reads_back_typed_values(tmp_path: Path) -> None:
    warehouse = SqliteWarehouse(tmp_path / "w.sqlite")
    warehouse.ensure_schema()
    warehouse.ensure_schema()
    facts = [
        {
            "message_id": f"m{i}",
            "user_id": f"u{i % 2}",
            "occurred_at": NOW,
            "day": NOW.date(),
            "channel": "",
            "intents": ["billing", "refund"][:i],
            "campaign_ids": [],
        }
        for i in range(3)
    ]
    assert warehouse.upsert("message_facts", facts) == 3
    warehouse.upsert("message_facts", list(reversed(facts)))
    assert warehouse.read("message_facts") == facts
    assert warehouse.id == f"sqlite:{(tmp_path / 'w.sqlite').resolve()}"

    rows = [
        {"day": date(2026, 11, d), "channel": "chat", "messages": d, "active_users": 1}
        for d in (27, 28)
    ]
    warehouse.replace("daily_activity", rows)
    warehouse.replace("daily_activity", rows[1:])
    assert warehouse.read("daily_activity") == rows[1:]

    assert warehouse.delete_user(["u0"]) == 2
    assert warehouse.delete_user(["u0"]) == 0
    assert [r["message_id"] for r in warehouse.read("message_facts")] == ["m1"]
    warehouse.close()


def test_a_sqlite_file_that_cannot_be_opened_is_a_warehouse_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(WarehouseError, match="not-a-folder"):
        SqliteWarehouse(blocker / "w.sqlite")


def test_erase_user_refuses_an_empty_user_id() -> None:
    with pytest.raises(ValueError, match="user_id"):
        erase_user(Settings(), "")
