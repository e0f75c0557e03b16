"""The warehouse: SQLite and the BigQuery emulator (a real server of the local stack) hold
the same facts and aggregates as PostgreSQL after a sync, syncs are idempotent, and an erasure
reaches both."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from mpp import analytics
from mpp.analytics import erase_user
from mpp.config import Settings
from mpp.warehouse import TABLES, Warehouse, open_warehouse
from mpp.warehouse.bigquery import BigQueryWarehouse
from mpp.warehouse.sqlite import SqliteWarehouse
from mpp.warehouse.sync import sync_warehouse

from .workload import workload, write

EMULATOR = "http://127.0.0.1:19050"


@pytest.fixture
def settings(database_settings: Settings, unique: str) -> Settings:
    warehouse = database_settings.warehouse.model_copy(
        update={
            "backend": "bigquery",
            "bigquery_endpoint": EMULATOR,
            "bigquery_dataset": f"test_{unique}",
        }
    )
    return database_settings.model_copy(update={"warehouse": warehouse})


@pytest.fixture
def bigquery(settings: Settings) -> Iterator[BigQueryWarehouse]:
    warehouse = open_warehouse(settings)
    assert isinstance(warehouse, BigQueryWarehouse)
    yield warehouse
    warehouse.client.delete_dataset(
        f"{warehouse.project}.{warehouse.dataset}", delete_contents=True, not_found_ok=True
    )
    warehouse.close()


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[SqliteWarehouse]:
    warehouse = SqliteWarehouse(tmp_path / "warehouse.sqlite")
    warehouse.ensure_schema()
    yield warehouse
    warehouse.close()


def postgres_tables(conn: psycopg.Connection[Any]) -> dict[str, list[dict[str, Any]]]:
    return {t: analytics.read_table(conn, t) for t in TABLES}


def warehouse_tables(warehouse: Warehouse) -> dict[str, list[dict[str, Any]]]:
    return {t: warehouse.read(t) for t in TABLES}


def test_sqlite_and_bigquery_hold_the_same_numbers_as_postgres(
    settings: Settings, unique: str, bigquery: BigQueryWarehouse, sqlite: SqliteWarehouse
) -> None:
    work = workload(unique, messages=150)
    with psycopg.connect(settings.postgres.conninfo(), autocommit=True) as conn:
        for batch in work.batches(40):
            write(conn, batch)
        source = postgres_tables(conn)
        assert all(source[t] for t in source)
        reports = [sync_warehouse(conn, w) for w in (sqlite, bigquery)]
        assert (
            reports[0].facts
            == reports[1].facts
            == {
                "message_facts": len(source["message_facts"]),
                "feedback_facts": len(source["feedback_facts"]),
            }
        )
        assert warehouse_tables(sqlite) == source
        assert warehouse_tables(bigquery) == source
        for table in ("message_facts", "feedback_facts", "campaign_performance_daily"):
            definition = bigquery.client.get_table(f"{bigquery.project}.{bigquery.dataset}.{table}")
            assert definition.time_partitioning.field == "day"
            assert definition.time_partitioning.type_ == "DAY"
        # No staging table is left behind.
        tables = bigquery.client.list_tables(f"{bigquery.project}.{bigquery.dataset}")
        assert sorted(t.table_id for t in tables) == sorted(TABLES)

        # Again, and again with --full: nothing changes (MERGE by key).
        sync_warehouse(conn, bigquery)
        sync_warehouse(conn, sqlite, full=True)
        assert warehouse_tables(bigquery) == warehouse_tables(sqlite) == source

        # New facts, one user erased through the stream path: the next sync brings both
        # warehouses to PostgreSQL's new state.
        more = workload(f"{unique}b", messages=40, seed=11, erase=0)
        for batch in more.batches(40):
            write(conn, batch)
        # A message re-enriched (other intents, another campaign): its fact is replaced, and
        # the sync carries the new version to both warehouses.
        kept, _ = work.final_facts()
        old = next(m for m in kept.values() if m.user_id != f"{unique}-u5")
        new = dataclasses.replace(old, intents=("upgrade",), campaign_ids=(f"{unique}-c4",))
        assert analytics.write_batch(conn, [new], []).messages_inserted == 1
        victim = f"{unique}-u5"
        analytics.write_batch(conn, [], [], [victim], warehouse=bigquery.id)
        analytics.write_batch(conn, [], [], [victim], warehouse=sqlite.id)
        for w in (sqlite, bigquery):
            assert sync_warehouse(conn, w).erased_users == 1
        source = postgres_tables(conn)
        assert warehouse_tables(sqlite) == warehouse_tables(bigquery) == source
        assert victim not in {r["user_id"] for r in source["message_facts"]}
        assert conn.execute("SELECT count(*) FROM analytics_pending_erasures").fetchone() == (0,)
        (row,) = [
            r
            for r in warehouse_tables(bigquery)["message_facts"]
            if r["message_id"] == old.message_id
        ]
        assert list(row["intents"]) == ["upgrade"] and list(row["campaign_ids"]) == [f"{unique}-c4"]


def test_erase_user_removes_the_user_from_postgres_and_the_warehouse_at_once(
    settings: Settings, unique: str, bigquery: BigQueryWarehouse, sqlite: SqliteWarehouse
) -> None:
    work = workload(unique, messages=80, erase=0)
    victim = f"{unique}-u2"
    with psycopg.connect(settings.postgres.conninfo(), autocommit=True) as conn:
        for batch in work.batches(40):
            write(conn, batch)
        for w in (sqlite, bigquery):
            sync_warehouse(conn, w)
    assert any(r["user_id"] == victim for r in bigquery.read("message_facts"))

    first = erase_user(settings, victim)  # the configured warehouse: the emulator
    assert first.messages > 0 and not first.warehouse_pending and first.warehouse_rows
    again = erase_user(settings, victim, warehouse=sqlite)
    assert (again.messages, again.feedback_events) == (0, 0)
    assert again.warehouse_rows and again.warehouse_rows > 0
    for w in (bigquery, sqlite):
        for table in ("message_facts", "feedback_facts", "user_engagement"):
            assert victim not in {r["user_id"] for r in w.read(table)}
    with psycopg.connect(settings.postgres.conninfo(), autocommit=True) as conn:
        for table in ("message_facts", "feedback_facts", "user_engagement"):
            assert victim not in {r["user_id"] for r in analytics.read_table(conn, table)}
        for w in (sqlite, bigquery):
            sync_warehouse(conn, w)
        assert warehouse_tables(bigquery) == warehouse_tables(sqlite) == postgres_tables(conn)


def test_erasure_stays_pending_while_the_warehouse_is_away(settings: Settings, unique: str) -> None:
    away = settings.model_copy(
        update={
            "warehouse": settings.warehouse.model_copy(
                update={"bigquery_endpoint": "http://127.0.0.1:9", "bigquery_request_timeout_s": 2}
            )
        }
    )
    work = workload(unique, messages=30, erase=0)
    with psycopg.connect(settings.postgres.conninfo(), autocommit=True) as conn:
        write(conn, work.events)
        victim = work.events[0][1].user_id
        started = time.monotonic()
        result = erase_user(away, victim)
        assert time.monotonic() - started < 30
        assert result.messages > 0 and result.warehouse_pending
        assert conn.execute("SELECT user_id FROM analytics_pending_erasures").fetchall() == [
            (victim,)
        ]
