"""The warehouse interface on SQLite (a file, no server), and that its tables are the
PostgreSQL schema's."""

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

NOW = datetime(2026, 11, 28, 23, 59, 59, 123456, tzinfo=UTC)


def postgres_columns() -> dict[str, list[str]]:
    sql = resources.files("mpp.db").joinpath("migrations/0002_analytics.sql").read_text()
    tables = {}
    for name, body in re.findall(r"CREATE TABLE (\w+) \((.*?)\n\);", sql, re.S):
        columns = [
            line.split()[0]
            for line in body.splitlines()
            if line.strip() and not line.strip().startswith(("PRIMARY", "CHECK", "--"))
        ]
        tables[name] = [c for c in columns if c not in {"recorded_at", "updated_at"}]
    return tables


def test_the_warehouse_tables_are_postgres_analytics_tables() -> None:
    assert {name: list(spec.column_names) for name, spec in TABLES.items()} == postgres_columns()


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
