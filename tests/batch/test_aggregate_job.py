"""The Spark aggregation job against the analytics service's own numbers: facts written
through ``mpp.analytics.write_batch`` (replays, re-enrichments and erasures included) into a
private PostgreSQL database; the job's aggregates must equal PostgreSQL's serving tables, and
it must say so when they do not."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import psycopg
import pytest

from mpp import analytics
from mpp.config import Settings
from mpp.stack import job_venvs as venvs
from mpp.warehouse.sqlite import SqliteWarehouse
from tests.integration.analytics.workload import aggregates as serving_tables
from tests.integration.analytics.workload import workload, write

from .conftest import BUILD_TIMEOUT_S, last_json, run_python, settings_env

# The first test of a fresh machine builds the jobs' environment in its setup.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(BUILD_TIMEOUT_S)]


def test_aggregation_job_equals_the_serving_tables_and_fills_the_warehouse(
    database_settings: Settings, unique: str, jobs_python: Path, tmp_path: Path
) -> None:
    work = workload(unique, messages=300)
    with psycopg.connect(database_settings.postgres.conninfo(), autocommit=True) as conn:
        for batch in work.batches(37):
            write(conn, batch)
        serving = serving_tables(conn)
        counts = {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[index]
            for t in analytics.FACT_TABLES
        }
    assert all(serving[t] for t in serving)  # every table has rows that could be wrong

    warehouse_file = tmp_path / "warehouse.sqlite"
    dump = tmp_path / "aggregates.json"
    env = venvs.job_env(
        {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", str(tmp_path)),
            "MPP_WAREHOUSE__SQLITE_PATH": str(warehouse_file),
            "MPP_SPARK_MASTER": "local[2]",
            **settings_env(database_settings),
        }
    )
    argv = ["-m", "mpp_jobs.aggregate", "--facts", "postgres", "--compare-postgres"]
    result = run_python(jobs_python, [*argv, "--write-warehouse", "--dump", str(dump)], env)
    summary = last_json(result.stdout)
    assert summary["differences"] == []
    assert summary["postgres_equal"] is True
    assert summary["fact_rows"] == counts
    assert sum(1 for kind, _ in work.events if kind == "erase") == 2

    # The job's own rows, independently of its comparison: equal to the serving tables.
    assert json.loads(dump.read_text()) == analytics.jsonable(serving)
    warehouse = SqliteWarehouse(warehouse_file)
    try:
        for table, rows in serving.items():
            assert warehouse.read(table) == rows, table
    finally:
        warehouse.close()

    # From a facts export (JSON Lines) instead of the tables, after a serving row drifted
    # from the facts: the drift is found, named, and fails the job.
    export = tmp_path / "facts"
    with psycopg.connect(database_settings.postgres.conninfo(), autocommit=True) as conn:
        for table in analytics.FACT_TABLES:
            (export / table).mkdir(parents=True)
            rows = analytics.jsonable(analytics.read_table(conn, table))
            (export / table / "part-0.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
        victim = serving["campaign_performance"][0]["campaign_id"]
        conn.execute(
            "UPDATE campaign_performance SET clicks = clicks + 1 WHERE campaign_id = %s",
            (victim,),
        )
    argv = ["-m", "mpp_jobs.aggregate", "--facts", str(export), "--compare-postgres"]
    failed = run_python(jobs_python, argv, env, check=False)
    assert failed.returncode == 1, failed.stderr[-3000:]
    report: dict[str, Any] = last_json(failed.stdout)
    assert report["fact_rows"] == counts
    assert report["postgres_equal"] is False
    assert len(report["differences"]) == 1
    assert victim in report["differences"][0] and "clicks" in report["differences"][0]
