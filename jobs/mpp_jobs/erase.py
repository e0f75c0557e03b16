"""Erasure of the batch path's files and the warehouse: what the streaming erasure cannot reach.

The stores of the stream forget a user at once (``mpp.erasure``); the batch path keeps its own
copies under the batch data folder (``--data``, ``/data`` on the cluster): the raw chat events
it re-ingests, the embedding job's Parquet (``enriched/``, partitioned by day, and
``rejects/``, whose ``raw`` column is the original line), the aggregates' Parquet, and, locally,
the SQLite warehouse. This job rewrites every one of them without the rows of erased users
sent at or before their erasure, reading who was erased from the erasure ledger
(``erased_users``: keyed hashes, ``mpp.ids.user_hash``; every key in use is tried, so a
rotation forgets no erasure):

- JSON Lines files (``*.jsonl``, ``*.ndjson``, ``*.json``, ``*.txt`` and Spark's text
  ``part-*`` files): line by line, in Python; a line whose user is erased goes when its
  timestamp is at or before the erasure or cannot be read;
- Parquet files: each dataset (a folder of ``*.parquet`` files, ``key=value`` partition
  folders included) is scanned once with Spark for the files that hold such rows (the user
  column is ``user_id``, else the user_id of the JSON in ``raw``; the time ``timestamp_ms``,
  ``timestamp`` or ``occurred_at``; a row without one goes). Only those files are rewritten,
  each in place of itself (same name, same folder; its stale ``.crc`` removed), so that the
  datasets' layout and the jobs' incremental runs (``--mode new``) are unchanged;
- the warehouse (``--warehouse``): its rows of erased users (``Warehouse.delete_user``; SQLite
  overwrites deleted content and truncates its write-ahead log).

The erased users are matched by a Python UDF that holds the ledger's hashes: no user id is
written into Spark's plans (nor its event log under the data folder).

Deadline: the DAG ``marketing_personalization_pipeline`` runs this as its first task, so an
erasure reaches the batch outputs by the next run (daily); ``mpp analytics erase-batch`` (or
``python -m mpp_jobs.erase --data DIR``) runs it at once. Idempotent: a second run rewrites
nothing. Prints a JSON summary as its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in (None, ""):  # spark-submit runs this file as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mpp_jobs.common import add_spark_options, emit_summary, spark_session, store_failures

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from mpp.config import Settings

TEXT_SUFFIXES = (".jsonl", ".ndjson", ".json", ".txt")
USER_COLUMNS = ("user_id",)
TIME_COLUMNS = ("timestamp_ms", "timestamp", "occurred_at")


@dataclass(frozen=True)
class ErasedUsers:
    """The erasure ledger as this job needs it: keyed hash -> erased_at, and the keys."""

    erased: Mapping[str, datetime]
    keys: tuple[bytes, ...]

    @classmethod
    def from_ledger(cls, settings: Settings) -> ErasedUsers:
        import psycopg

        from mpp.ids import all_keys

        with psycopg.connect(settings.postgres.conninfo()) as conn:
            rows = conn.execute("SELECT user_hash, erased_at FROM erased_users").fetchall()
        return cls({h: at for h, at in rows}, tuple(all_keys(settings)))

    def erased_at(self, user_id: str) -> datetime | None:
        from mpp.ids import user_hash

        found = [at for k in self.keys if (at := self.erased.get(user_hash(user_id, k)))]
        return max(found) if found else None

    def drops(self, user_id: Any, at: datetime | None) -> bool:
        """Whether a row of ``user_id`` stamped ``at`` (None: unknown) is to go."""
        if not isinstance(user_id, str) or not user_id:
            return False
        erased = self.erased_at(user_id)
        return erased is not None and (at is None or at <= erased)


def row_time(value: Any) -> datetime | None:
    """A row's time: epoch ms, a datetime (UTC when naive: Spark's session zone), RFC 3339."""
    from mpp.codecs import parse_timestamp

    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        return parse_timestamp(value) if value is not None else None
    except (ValueError, TypeError):
        return None


def user_of_json(raw: Any) -> tuple[Any, datetime | None]:
    """(user_id, time) of a raw JSON event, (None, None) when it is not one."""
    try:
        event = json.loads(raw)
    except (ValueError, TypeError):
        return None, None
    if not isinstance(event, dict):
        return None, None
    return event.get("user_id"), row_time(event.get("timestamp"))


# -- JSON Lines ------------------------------------------------------------------------------


def is_text_file(path: Path) -> bool:
    return path.suffix in TEXT_SUFFIXES or (path.name.startswith("part-") and path.suffix == "")


def erase_lines(path: Path, users: ErasedUsers) -> int:
    """Rewrite a JSON Lines file without the lines of erased users; returns lines removed."""
    kept: list[bytes] = []
    removed = 0
    with path.open("rb") as source:
        for line in source:
            user_id, at = user_of_json(line)
            if users.drops(user_id, at):
                removed += 1
            else:
                kept.append(line)
    if removed:
        temporary = path.with_name(f".{path.name}.erasing")
        temporary.write_bytes(b"".join(kept))
        os.replace(temporary, path)
        _drop_checksum(path)
    return removed


def _drop_checksum(path: Path) -> None:
    """Spark (Hadoop's local file system) checks a file against ``.<name>.crc`` if present."""
    path.with_name(f".{path.name}.crc").unlink(missing_ok=True)


# -- Parquet ---------------------------------------------------------------------------------


def dataset_root(path: Path) -> Path:
    """The folder a Parquet file's dataset starts at (above its ``key=value`` folders)."""
    root = path.parent
    while "=" in root.name:
        root = root.parent
    return root


def parquet_datasets(data: Path) -> dict[Path, list[Path]]:
    datasets: dict[Path, list[Path]] = {}
    for path in sorted(data.rglob("*.parquet")):
        if path.name.startswith((".", "_")) or not path.is_file():
            continue
        datasets.setdefault(dataset_root(path), []).append(path)
    return datasets


def _dropper(frame: DataFrame, users: ErasedUsers) -> Any | None:
    """A boolean Column: the row is an erased user's (None when the dataset has no user)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    columns = set(frame.columns)
    time_column = next((c for c in TIME_COLUMNS if c in columns), None)
    if "user_id" in columns:

        def drops(user_id: Any, at: Any) -> bool:
            return users.drops(user_id, row_time(at))

        udf = F.udf(drops, T.BooleanType(), useArrow=False)
        at = F.col(time_column) if time_column else F.lit(None)
        return udf(F.col("user_id"), at)
    if "raw" in columns:

        def drops_raw(raw: Any) -> bool:
            return users.drops(*user_of_json(raw))

        return F.udf(drops_raw, T.BooleanType(), useArrow=False)(F.col("raw"))
    return None


def erase_parquet(
    spark: SparkSession, root: Path, files: list[Path], users: ErasedUsers
) -> dict[str, int]:
    """Rewrite the files of one dataset that hold erased users' rows; returns rows removed
    per file (relative to ``root``)."""
    from pyspark.sql import functions as F

    # Files are read without partition discovery: a file holds only its own columns, and is
    # written back the same.
    frame = spark.read.option("recursiveFileLookup", "true").parquet(*map(str, files))
    drops = _dropper(frame, users)
    if drops is None:
        return {}
    hits = frame.where(drops).groupBy(F.col("_metadata.file_path").alias("file")).count().collect()
    removed: dict[str, int] = {}
    for hit in hits:
        path = _local(hit["file"])
        one = spark.read.parquet(str(path))
        keep = _dropper(one, users)
        assert keep is not None
        temporary = path.with_name(f".{path.name}.erasing")
        one.where(~keep).coalesce(1).write.mode("overwrite").parquet(str(temporary))
        parts = sorted(temporary.glob("part-*.parquet"))
        if parts:
            os.replace(parts[0], path)
        else:  # nothing left, and Spark wrote no file for an empty frame
            path.unlink()
        shutil.rmtree(temporary, ignore_errors=True)
        _drop_checksum(path)
        removed[str(path.relative_to(root))] = int(hit["count"])
    return removed


def _local(uri: str) -> Path:
    from urllib.parse import unquote, urlsplit

    return Path(unquote(urlsplit(uri).path)) if uri.startswith("file:") else Path(uri)


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Summary:
    job: str = "erase"
    erased_users: int = 0
    lines_removed: dict[str, int] = field(default_factory=dict)
    rows_removed: dict[str, int] = field(default_factory=dict)
    warehouse_rows_removed: int | None = None
    seconds: float = 0.0


def erase_files(
    data: Path, users: ErasedUsers, spark: Callable[[], SparkSession] | None
) -> Summary:
    """Every file under ``data``; Spark (started only when there is Parquet) for Parquet."""
    summary = Summary(erased_users=len(users.erased))
    if not users.erased or not data.exists():
        return summary
    for path in sorted(p for p in data.rglob("*") if p.is_file() and is_text_file(p)):
        if path.name.startswith((".", "_")):
            continue
        if removed := erase_lines(path, users):
            summary.lines_removed[str(path.relative_to(data))] = removed
    datasets = parquet_datasets(data)
    if datasets and spark is not None:
        session = spark()
        for root, files in datasets.items():
            for name, count in erase_parquet(session, root, files, users).items():
                summary.rows_removed[str((root / name).relative_to(data))] = count
    return summary


def erase_warehouse(settings: Settings, users: ErasedUsers) -> int:
    from mpp.warehouse import open_warehouse

    warehouse = open_warehouse(settings)
    try:
        erased = [u for u in warehouse.user_ids() if users.erased_at(u) is not None]
        return warehouse.delete_user(erased) if erased else 0
    finally:
        warehouse.close()


def run(args: argparse.Namespace, users: ErasedUsers | None = None) -> dict[str, Any]:
    from mpp.config import Settings

    started = time.monotonic()
    settings = Settings()
    users = users or ErasedUsers.from_ledger(settings)
    sessions: list[SparkSession] = []

    def spark() -> SparkSession:
        if not sessions:
            sessions.append(spark_session("mpp-erase", args.master))
        return sessions[0]

    summary = erase_files(Path(args.data), users, None if args.no_spark else spark)
    if args.warehouse:
        summary.warehouse_rows_removed = erase_warehouse(settings, users)
    summary.seconds = round(time.monotonic() - started, 2)
    return summary.__dict__


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mpp_jobs.erase",
        description="Rewrite the batch outputs (and the warehouse) without erased users.",
    )
    p.add_argument(
        "--data",
        default=os.environ.get("MPP_BATCH_DATA_DIR") or "/data",
        help="the batch data folder (default: MPP_BATCH_DATA_DIR, else /data)",
    )
    p.add_argument("--warehouse", action="store_true", help="also erase from the warehouse")
    p.add_argument(
        "--no-spark",
        action="store_true",
        help="JSON Lines only (Parquet needs Spark: the jobs' environment)",
    )
    p.add_argument("--summary", help="also write the JSON summary to this file")
    add_spark_options(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # PostgreSQL (the ledger) or the warehouse down: one readable line and exit 75, and the
    # task's retry runs the job again (it rewrites nothing before it has read the ledger).
    with store_failures("erase"):
        summary = run(args)
    emit_summary(summary, args.summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
