"""PostgreSQL analytics tables → the warehouse, on a schedule and on demand.

``sync_warehouse``:
1. facts (``message_facts``, ``feedback_facts``): the rows recorded since the warehouse's
   watermark minus ``FACT_OVERLAP`` (all of them the first time, or with ``full``), merged by id;
   the watermark (per warehouse and table, in ``analytics_warehouse_sync``) moves to the newest
   ``recorded_at`` sent. Sending a row twice changes nothing, so the overlap only costs time;
   it covers a batch whose transaction committed after a later one started.
2. aggregates: read in one snapshot and ``replace``d, so the warehouse holds exactly
   PostgreSQL's (a key that lost all its facts disappears).
3. erasures recorded in ``analytics_pending_erasures`` for this warehouse are applied, last:
   a user erased while this sync ran is not brought back by it.

Syncs and erasures of one warehouse serialize on a PostgreSQL advisory lock, so that two
service instances or the CLI never interleave their loads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from mpp.logs import get_logger
from mpp.warehouse import Row, Warehouse, spec
from mpp.warehouse.tables import AGGREGATE_TABLES, FACT_TABLES

log = get_logger(__name__)

# pg_advisory_lock key (with the warehouse's hash) for warehouse writes ("mppw").
SYNC_LOCK = 0x6D707077
FACT_OVERLAP = timedelta(minutes=10)
FETCH_ROWS = 50_000


@dataclass
class SyncReport:
    warehouse: str
    facts: dict[str, int] = field(default_factory=dict)
    aggregates: dict[str, int] = field(default_factory=dict)
    erased_users: int = 0
    seconds: float = 0.0


class WarehouseLock:
    """A session advisory lock per warehouse, taken with a timeout."""

    def __init__(self, conn: psycopg.Connection[Any], warehouse: str, timeout_s: float) -> None:
        self.conn, self.warehouse, self.timeout_s = conn, warehouse, timeout_s

    def __enter__(self) -> None:
        self.conn.execute(f"SET lock_timeout = '{int(self.timeout_s * 1000)}ms'")
        try:
            self.conn.execute(
                "SELECT pg_advisory_lock(%s, hashtext(%s))", (SYNC_LOCK, self.warehouse)
            )
        finally:
            self.conn.execute("RESET lock_timeout")

    def __exit__(self, *exc: object) -> None:
        if not self.conn.broken and not self.conn.closed:
            self.conn.execute(
                "SELECT pg_advisory_unlock(%s, hashtext(%s))", (SYNC_LOCK, self.warehouse)
            )


def _sync_facts(conn: psycopg.Connection[Any], warehouse: Warehouse, table: str, full: bool) -> int:
    columns = spec(table).column_list()
    row = conn.execute(
        "SELECT synced_through FROM analytics_warehouse_sync"
        " WHERE warehouse = %s AND table_name = %s",
        (warehouse.id, table),
    ).fetchone()
    since: datetime | None = None if full or row is None else row[0] - FACT_OVERLAP
    sent = 0
    newest: datetime | None = None
    with conn.transaction(), conn.cursor(f"sync_{table}", row_factory=dict_row) as cur:
        cur.execute(
            f"SELECT {columns}, recorded_at FROM {table}"
            " WHERE recorded_at >= coalesce(%s, '-infinity'::timestamptz) ORDER BY recorded_at",
            (since,),
        )
        while rows := cur.fetchmany(FETCH_ROWS):
            newest = rows[-1]["recorded_at"]
            warehouse.upsert(table, [_without(r, "recorded_at") for r in rows])
            sent += len(rows)
    if newest is not None:
        conn.execute(
            "INSERT INTO analytics_warehouse_sync (warehouse, table_name, synced_through)"
            " VALUES (%s, %s, %s) ON CONFLICT (warehouse, table_name) DO UPDATE"
            " SET synced_through = excluded.synced_through, synced_at = now()",
            (warehouse.id, table, newest),
        )
    return sent


def _without(row: dict[str, Any], column: str) -> Row:
    return {k: v for k, v in row.items() if k != column}


def _read_aggregates(conn: psycopg.Connection[Any]) -> dict[str, list[Row]]:
    # One snapshot: the totals agree with the daily rows they were summed from.
    tables: dict[str, list[Row]] = {}
    with (
        conn.transaction(),
        conn.cursor(row_factory=dict_row) as cur,
    ):
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        for table in AGGREGATE_TABLES:
            cur.execute(f"SELECT {spec(table).column_list()} FROM {table}")
            tables[table] = list(cur.fetchall())
    return tables


def apply_pending_erasures(conn: psycopg.Connection[Any], warehouse: Warehouse) -> tuple[int, int]:
    """Delete from the warehouse the users erased in PostgreSQL: (users, rows deleted)."""
    users = [
        r[0]
        for r in conn.execute(
            "SELECT user_id FROM analytics_pending_erasures WHERE warehouse = %s ORDER BY user_id",
            (warehouse.id,),
        )
    ]
    if not users:
        return 0, 0
    rows = warehouse.delete_user(users)
    conn.execute(
        "DELETE FROM analytics_pending_erasures WHERE warehouse = %s AND user_id = ANY(%s)",
        (warehouse.id, users),
    )
    return len(users), rows


def sync_warehouse(
    conn: psycopg.Connection[Any],
    warehouse: Warehouse,
    *,
    full: bool = False,
    lock_timeout_s: float = 600.0,
) -> SyncReport:
    """Bring the warehouse up to date with PostgreSQL (``conn``: autocommit). Raises
    ``WarehouseError`` or ``psycopg.Error``; what was done stays done and the next sync
    resumes from the watermarks."""
    started = time.perf_counter()
    report = SyncReport(warehouse=warehouse.id)
    with WarehouseLock(conn, warehouse.id, lock_timeout_s):
        for table in FACT_TABLES:
            report.facts[table] = _sync_facts(conn, warehouse, table, full)
        for table, rows in _read_aggregates(conn).items():
            report.aggregates[table] = warehouse.replace(table, rows)
        report.erased_users = apply_pending_erasures(conn, warehouse)[0]
    report.seconds = round(time.perf_counter() - started, 3)
    log.info(
        "warehouse_synced",
        warehouse=warehouse.id,
        facts=report.facts,
        aggregates=report.aggregates,
        erased_users=report.erased_users,
        seconds=report.seconds,
    )
    return report
