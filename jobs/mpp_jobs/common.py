"""What both batch jobs share: the Spark session, the date range, the run summary, and what a
store that cannot be reached does to a run."""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


@dataclass(frozen=True)
class DateRange:
    """UTC days ``[start, end)``: ``start`` included, ``end`` excluded (Airflow's data
    interval of a daily run is ``[ds, next ds)``)."""

    start: date
    end: date

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError(
                f"--to {self.end} must be after --from {self.start} (the range is [from, to): "
                "one day is --from D --to D+1)"
            )

    def contains(self, day: date) -> bool:
        return self.start <= day < self.end

    @classmethod
    def parse(cls, start: str | None, end: str | None) -> DateRange | None:
        """``None`` when neither is given (every day); ``--to`` defaults to ``--from`` + 1."""
        if start is None and end is None:
            return None
        if start is None:
            raise ValueError("--to needs --from: the range is [from, to) in UTC days")
        first = _day(start, "--from")
        last = _day(end, "--to") if end is not None else first + timedelta(days=1)
        return cls(first, last)


def _day(value: str, option: str) -> date:
    try:
        # Airflow templates may hand over a full timestamp; its UTC date is the day.
        if "T" in value:
            return datetime.fromisoformat(value).astimezone(UTC).date()
        return date.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"{option} {value!r} is not a date like 2026-11-27 ({exc})") from exc


def add_spark_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--master",
        default=None,
        help="Spark master; default: the one spark-submit was given, else "
        "$MPP_SPARK_MASTER or local[*]",
    )


def spark_session(app: str, master: str | None = None) -> SparkSession:
    """The job's session: UTC everywhere, no UI, quiet logs.

    Under ``spark-submit`` the master (and everything else) comes from its command line;
    run as ``python -m mpp_jobs.<job>`` it is local unless ``--master`` says otherwise.
    """
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app)
    under_submit = "PYSPARK_GATEWAY_PORT" in os.environ
    if master or not under_submit:
        builder = builder.master(master or os.environ.get("MPP_SPARK_MASTER", "local[*]"))
    session = (
        builder.config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", os.environ.get("MPP_SPARK_SHUFFLE", "8"))
        .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("WARN")
    ship_jobs_package(session)
    return session


def ship_jobs_package(session: SparkSession) -> None:
    """Send this package to the executors (``addPyFile``), so that their Python workers import
    ``mpp_jobs`` whether or not it is on their path: ``spark-submit jobs/mpp_jobs/embed.py``
    puts only the driver's script folder on the driver's path."""
    package = Path(__file__).resolve().parent
    if not package.is_dir():  # already running from a shipped archive
        return
    folder = tempfile.mkdtemp(prefix="mpp-jobs-")
    atexit.register(shutil.rmtree, folder, True)
    archive = Path(folder) / "mpp_jobs.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for source in sorted(package.glob("*.py")):
            zf.write(source, f"mpp_jobs/{source.name}")
    session.sparkContext.addPyFile(str(archive))


def emit_summary(summary: dict[str, Any], path: str | None) -> None:
    """The run's figures as one JSON object: on stdout, and in ``path`` when given."""
    text = json.dumps(summary, sort_keys=True, default=str)
    if path:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def executor_count(session: SparkSession) -> int:
    """Executors registered with the driver (0 in local mode: the driver does the work)."""
    context = session.sparkContext
    if (context.master or "").startswith("local"):
        return 0
    # The block managers known to the driver: the executors' and the driver's own.
    status = context._jsc.sc().getExecutorMemoryStatus()
    return max(int(status.size()) - 1, 0)


# sysexits.h's EX_TEMPFAIL: the run may succeed when tried again.
EXIT_STORE_UNAVAILABLE = 75


def _unavailable_store(exc: BaseException) -> str | None:
    """The store ``exc`` says cannot be reached, if that is what it says."""
    try:
        import psycopg
    except ModuleNotFoundError:  # pragma: no cover - the jobs' environment has it
        psycopg = None  # type: ignore[assignment]
    if psycopg is not None and isinstance(exc, psycopg.OperationalError):
        return "PostgreSQL"
    try:
        from confluent_kafka import KafkaException
    except ModuleNotFoundError:  # pragma: no cover
        return None
    if isinstance(exc, KafkaException):
        return "Kafka"
    return None


@contextmanager
def store_failures(job: str) -> Iterator[None]:
    """A store that cannot be reached ends the run with one readable line (on stdout, which the
    task's log shows, and as a JSON event on stderr) and exit status 75, instead of a
    traceback: nothing was committed, and the task's retry runs the job again."""
    try:
        yield
    except Exception as exc:
        store = _unavailable_store(exc)
        if store is None:
            raise
        reason = " ".join(str(exc).split()) or type(exc).__name__
        sys.stdout.write(
            f"{job}: {store} is unavailable: {reason}. Nothing was committed; the task fails "
            "and its retry runs the job again.\n"
        )
        sys.stdout.flush()
        event = {"event": "store_unavailable", "job": job, "store": store, "error": reason}
        sys.stderr.write(json.dumps(event) + "\n")
        raise SystemExit(EXIT_STORE_UNAVAILABLE) from exc
