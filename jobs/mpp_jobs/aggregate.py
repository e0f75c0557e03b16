"""Batch aggregation: the analytics aggregates recomputed with Spark from the facts.

The definitions are ``mpp.analytics.facts``' (its docstring; ``mpp.analytics.aggregates``
holds them as the SQL that the analytics service runs in PostgreSQL); this job computes the
same four tables from the facts alone, in Spark, with the columns and keys of the catalog
(``mpp.warehouse.tables``):

- ``user_engagement``: per user with any fact: messages, active UTC days (messages or
  feedback), first and last seen (both), the 5 most frequent intents of the user's messages
  (ties by name), the campaigns of the user's messages, clicks and conversions (sorted);
- ``campaign_performance_daily``: per (campaign, UTC day): messages about it, and feedback
  counts by kind;
- ``campaign_performance``: the same summed over days, with CTR = clicks / impressions and
  conversion rate = conversions / clicks (0 when the denominator is 0);
- ``daily_activity``: per (UTC day, channel): messages, and the distinct users with a message
  or feedback that day on that channel.

Facts come from PostgreSQL (``--facts postgres``: ``message_facts`` and ``feedback_facts``,
read in one snapshot) or from a facts export (``--facts DIR`` holding ``message_facts`` and
``feedback_facts`` as Parquet or JSON Lines, with the tables' columns). The aggregates are
totals over every fact, so the job always recomputes all of them (re-running it changes
nothing); what it does with them:

- ``--compare-postgres``: compare with PostgreSQL's serving tables row by row; any difference
  is listed in the summary and the job exits 1 (a check that the stream's aggregates are
  exact);
- ``--write-warehouse``: replace the warehouse's four aggregate tables
  (``mpp.warehouse.open_warehouse``: SQLite locally, BigQuery in production);
- ``--output DIR``: also write them as Parquet, one folder per table.

Run: ``spark-submit jobs/mpp_jobs/aggregate.py --facts postgres --compare-postgres
--write-warehouse``, or ``python -m mpp_jobs.aggregate ...``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in (None, ""):  # spark-submit runs this file as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mpp_jobs.common import (
    add_spark_options,
    emit_summary,
    executor_count,
    spark_session,
    store_failures,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from mpp.config import Settings

FETCH_ROWS = 20_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def fact_schemas() -> dict[str, Any]:
    """The fact tables' Spark schemas, from the catalog (``mpp.warehouse.tables``); every
    column is required, as in PostgreSQL."""
    from pyspark.sql import types as T

    from mpp.warehouse.tables import FACT_TABLES, TABLES

    spark_types = {
        "STRING": T.StringType(),
        "INT64": T.LongType(),
        "FLOAT64": T.DoubleType(),
        "DATE": T.DateType(),
        "TIMESTAMP": T.TimestampType(),
        "STRINGS": T.ArrayType(T.StringType()),
    }
    return {
        table: T.StructType(
            [T.StructField(n, spark_types[t], False) for n, t in TABLES[table].columns]
        )
        for table in FACT_TABLES
    }


# -- reading the facts ------------------------------------------------------------------------


def read_facts_postgres(
    spark: SparkSession, settings: Settings, serving: bool = False
) -> tuple[dict[str, DataFrame], dict[str, list[dict[str, Any]]]]:
    """Both fact tables (and, with ``serving``, the four serving tables) in one REPEATABLE READ
    snapshot: a comparison is then exact even while the stream keeps writing. Facts are
    streamed through a server-side cursor into Spark (the driver holds one table at a time; a
    deployment with billions of facts exports them to Parquet and uses ``--facts DIR``)."""
    import psycopg

    from mpp.analytics.reports import read_table
    from mpp.warehouse.tables import AGGREGATE_TABLES

    schemas = fact_schemas()
    frames: dict[str, DataFrame] = {}
    tables: dict[str, list[dict[str, Any]]] = {}
    with psycopg.connect(settings.postgres.conninfo()) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        for table, schema in schemas.items():
            columns = ", ".join(schema.fieldNames())
            with conn.cursor(name=f"batch_{table}") as cur:
                cur.itersize = FETCH_ROWS
                cur.execute(f"SELECT {columns} FROM {table}")
                rows = [tuple(r) for r in cur]
            frames[table] = spark.createDataFrame(rows, schema)
            # The rows are already in the driver; persisting keeps Spark from re-sending them.
            frames[table].persist().count()
        if serving:
            tables = {t: read_table(conn, t) for t in AGGREGATE_TABLES}
    return frames, tables


def read_facts_export(spark: SparkSession, folder: str) -> dict[str, DataFrame]:
    from pyspark.sql import functions as F

    schemas = fact_schemas()
    frames: dict[str, DataFrame] = {}
    for table, schema in schemas.items():
        path = f"{folder.rstrip('/')}/{table}"
        local = Path(path)
        if local.is_dir() and not any(local.rglob("*.parquet")):
            frame = spark.read.schema(schema).json(path)
        else:
            frame = spark.read.parquet(path)
        frames[table] = frame.select(
            *[F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields]
        )
    return frames


# -- the four aggregates ----------------------------------------------------------------------


def aggregates(messages: DataFrame, feedback: DataFrame, top: int = 5) -> dict[str, DataFrame]:
    """The serving aggregates of ``mpp.analytics.facts`` from the two fact tables."""
    from pyspark.sql import functions as F

    from mpp.analytics.facts import ENGAGING_KINDS, FEEDBACK_KINDS
    from mpp.warehouse.tables import TABLES

    events = messages.select("user_id", "occurred_at", "day", "channel", F.lit(1).alias("m"))
    events = events.unionByName(
        feedback.select("user_id", "occurred_at", "day", "channel", F.lit(0).alias("m"))
    )
    span = events.groupBy("user_id").agg(
        F.sum("m").alias("messages"),
        F.countDistinct("day").alias("active_days"),
        F.min("occurred_at").alias("first_seen"),
        F.max("occurred_at").alias("last_seen"),
    )
    intent_counts = (
        messages.select("user_id", F.explode("intents").alias("intent"))
        .groupBy("user_id", "intent")
        .count()
    )
    # Most frequent first, ties by name: sort (-count, intent) pairs, keep the names.
    top_intents = intent_counts.groupBy("user_id").agg(
        F.slice(
            F.transform(
                F.array_sort(F.collect_list(F.struct((-F.col("count")).alias("n"), "intent"))),
                lambda s: s["intent"],
            ),
            1,
            top,
        ).alias("top_intents")
    )
    engaged = (
        messages.select("user_id", F.explode("campaign_ids").alias("campaign_id"))
        .unionByName(
            feedback.where(F.col("kind").isin(*ENGAGING_KINDS)).select("user_id", "campaign_id")
        )
        .groupBy("user_id")
        .agg(F.array_sort(F.collect_set("campaign_id")).alias("campaigns_engaged"))
    )
    empty = F.array().cast("array<string>")
    user_engagement = (
        span.join(top_intents, "user_id", "left")
        .join(engaged, "user_id", "left")
        .select(
            "user_id",
            F.col("messages").cast("long"),
            F.col("active_days").cast("long"),
            "first_seen",
            "last_seen",
            F.coalesce("top_intents", empty).alias("top_intents"),
            F.coalesce("campaigns_engaged", empty).alias("campaigns_engaged"),
        )
    )

    kinds = tuple(FEEDBACK_KINDS.values())
    about = messages.select(
        F.explode(F.array_distinct("campaign_ids")).alias("campaign_id"), "day"
    ).select("campaign_id", "day", F.lit("message").alias("kind"))
    counted = about.unionByName(feedback.select("campaign_id", "day", "kind"))
    daily = counted.groupBy("campaign_id", "day").agg(
        F.sum((F.col("kind") == "message").cast("long")).alias("messages"),
        *[F.sum((F.col("kind") == k).cast("long")).alias(f"{k}s") for k in kinds],
    )
    counts = ["messages", *[f"{k}s" for k in kinds]]
    totals = daily.groupBy("campaign_id").agg(*[F.sum(c).alias(c) for c in counts])
    performance = totals.select(
        "campaign_id",
        *counts,
        F.when(F.col("impressions") > 0, F.col("clicks") / F.col("impressions"))
        .otherwise(F.lit(0.0))
        .alias("ctr"),
        F.when(F.col("clicks") > 0, F.col("conversions") / F.col("clicks"))
        .otherwise(F.lit(0.0))
        .alias("conversion_rate"),
    )
    activity = events.groupBy("day", "channel").agg(
        F.sum("m").cast("long").alias("messages"),
        F.countDistinct("user_id").cast("long").alias("active_users"),
    )
    frames = {
        "user_engagement": user_engagement,
        "campaign_performance_daily": daily,
        "campaign_performance": performance,
        "daily_activity": activity,
    }
    # Each table with the catalog's columns, in its order.
    return {name: frame.select(*TABLES[name].column_names) for name, frame in frames.items()}


def collect(frame: DataFrame) -> list[dict[str, Any]]:
    """Rows as plain Python values, times as aware UTC datetimes (never the process's local
    zone), sorted by the table's key as ``mpp.analytics.reports.read_table`` sorts them."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    times = [f.name for f in frame.schema.fields if isinstance(f.dataType, T.TimestampType)]
    dates = [f.name for f in frame.schema.fields if isinstance(f.dataType, T.DateType)]
    selected = frame.select(
        *[
            F.unix_micros(c).alias(c)
            if c in times
            else F.date_diff(c, F.lit("1970-01-01").cast("date")).alias(c)
            if c in dates
            else F.col(c)
            for c in frame.columns
        ]
    )
    rows = []
    for row in selected.collect():
        item = row.asDict(recursive=True)
        for c in times:
            item[c] = _EPOCH + timedelta(microseconds=item[c])
        for c in dates:
            item[c] = date(1970, 1, 1) + timedelta(days=item[c])
        rows.append(item)
    return rows


def sort_rows(table: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from mpp.warehouse.tables import KEYS

    return sorted(rows, key=lambda r: tuple(r[k] for k in KEYS[table]))


def differences(
    table: str, expected: list[dict[str, Any]], actual: list[dict[str, Any]], limit: int = 10
) -> list[str]:
    """What differs between two tables' rows (by key): missing, extra, changed."""
    from mpp.warehouse.tables import KEYS

    def by_key(rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
        return {tuple(r[k] for k in KEYS[table]): r for r in rows}

    want, have = by_key(expected), by_key(actual)
    out = []
    for key in sorted(set(want) | set(have), key=str):
        if key not in have:
            out.append(f"{table} {key}: only in the batch result")
        elif key not in want:
            out.append(f"{table} {key}: only in postgres")
        else:
            changed = [c for c in want[key] if not _same(want[key][c], have[key].get(c))]
            if changed:
                detail = ", ".join(
                    f"{c}: {want[key][c]!r} vs {have[key].get(c)!r}" for c in changed
                )
                out.append(f"{table} {key}: {detail}")
        if len(out) >= limit:
            break
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and math.isclose(a, b)
    return bool(a == b)


def run(spark: SparkSession, args: argparse.Namespace) -> dict[str, Any]:
    import psycopg

    from mpp.analytics.reports import read_table
    from mpp.config import Settings
    from mpp.warehouse.tables import AGGREGATE_TABLES

    started = time.monotonic()
    settings = Settings()
    serving: dict[str, list[dict[str, Any]]] = {}
    if args.facts == "postgres":
        facts, serving = read_facts_postgres(spark, settings, serving=args.compare_postgres)
    else:
        facts = read_facts_export(spark, args.facts)
        if args.compare_postgres:
            with psycopg.connect(settings.postgres.conninfo()) as conn:
                serving = {t: read_table(conn, t) for t in AGGREGATE_TABLES}
    for frame in facts.values():
        frame.persist()
    frames = aggregates(facts["message_facts"], facts["feedback_facts"])
    tables = {name: sort_rows(name, collect(frame)) for name, frame in frames.items()}
    summary: dict[str, Any] = {
        "job": "aggregate",
        "facts": args.facts,
        "fact_rows": {name: frame.count() for name, frame in facts.items()},
        "rows": {name: len(rows) for name, rows in tables.items()},
    }
    if args.output:
        for name, frame in frames.items():
            frame.coalesce(1).write.mode("overwrite").parquet(f"{args.output.rstrip('/')}/{name}")
    if args.compare_postgres:
        found: list[str] = []
        for name, rows in tables.items():
            found += differences(name, rows, serving[name])
        summary["postgres_equal"] = not found
        summary["differences"] = found
    if args.write_warehouse:
        from mpp.warehouse import open_warehouse

        warehouse = open_warehouse(settings)
        try:
            summary["warehouse"] = warehouse.id
            summary["warehouse_rows"] = {
                name: warehouse.replace(name, rows) for name, rows in tables.items()
            }
        finally:
            warehouse.close()
    if args.dump:
        import json

        from mpp.analytics.reports import jsonable

        Path(args.dump).write_text(json.dumps(jsonable(tables), sort_keys=True))
    for frame in facts.values():
        frame.unpersist()
    summary["seconds"] = round(time.monotonic() - started, 2)
    return summary


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mpp_jobs.aggregate", description=__doc__.split("\n\n")[0])
    p.add_argument("--facts", default="postgres", help="postgres (default) or an export folder")
    p.add_argument("--compare-postgres", action="store_true", help="exit 1 unless equal")
    p.add_argument("--write-warehouse", action="store_true", help="replace the aggregates there")
    p.add_argument("--output", help="also write the aggregates as Parquet under this folder")
    p.add_argument("--dump", help="write the aggregates as JSON to this file (for checks)")
    p.add_argument("--logical-date", help="the scheduler's run date (recorded in the summary)")
    p.add_argument("--summary", help="also write the JSON summary to this file")
    add_spark_options(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    spark = spark_session("mpp-batch-aggregate", args.master)
    try:
        with store_failures("aggregate"):
            summary = run(spark, args)
        summary["logical_date"] = args.logical_date
        summary["executors"] = executor_count(spark)
        emit_summary(summary, args.summary)
    finally:
        spark.stop()
    return 1 if summary.get("postgres_equal") is False else 0


if __name__ == "__main__":
    from mpp_jobs.aggregate import main as module_main

    sys.exit(module_main())
