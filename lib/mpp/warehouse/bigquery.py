"""The BigQuery warehouse (google-cloud-bigquery), or a local emulator of its REST API.

Tables with a ``day`` column are partitioned by it (DAY). Writes are batched load jobs of
newline-delimited JSON into a staging table (``<table>__staging_<random>``, dropped after),
then one MERGE by the table's key into the target: a repeated sync changes nothing. ``replace``
adds ``WHEN NOT MATCHED BY SOURCE THEN DELETE``, so the target ends up equal to the rows sent.

Loads use a resumable upload (no size given to the client): it has no 5 MB ceiling, and the
emulator (bqemulator) accepts it, while it refuses the multipart upload's ``*/*`` media type.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any

from google.api_core import exceptions as google_errors
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery
from google.cloud.bigquery.retry import DEFAULT_JOB_RETRY
from requests import RequestException

from mpp.config import WarehouseSettings
from mpp.logs import get_logger
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

log = get_logger(__name__)

_BQ_TYPES: dict[ColumnType, str] = {
    "STRING": "STRING",
    "INT64": "INT64",
    "FLOAT64": "FLOAT64",
    "DATE": "DATE",
    "TIMESTAMP": "TIMESTAMP",
    "STRINGS": "STRING",
}
# Rows per load job: well under BigQuery's limits, and a few MB of JSON each.
LOAD_CHUNK_ROWS = 50_000


def schema(table: TableSpec) -> list[bigquery.SchemaField]:
    fields = []
    for name, kind in table.columns:
        if kind == "STRINGS":
            mode = "REPEATED"
        elif name in table.key:
            mode = "REQUIRED"
        else:
            mode = "NULLABLE"
        fields.append(bigquery.SchemaField(name, _BQ_TYPES[kind], mode=mode))
    return fields


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, tuple):
        return list(value)
    return value


def _from_bigquery(kind: ColumnType, value: Any) -> Any:
    if value is None:
        return [] if kind == "STRINGS" else None
    if kind == "TIMESTAMP" and isinstance(value, datetime):
        return value.astimezone(UTC)
    if kind == "FLOAT64":
        return float(value)
    if kind == "INT64":
        return int(value)
    if kind == "STRINGS":
        return list(value)
    return value


class BigQueryWarehouse(Warehouse):
    def __init__(self, settings: WarehouseSettings) -> None:
        self.settings = settings
        self.project = settings.bigquery_project
        self.dataset = settings.bigquery_dataset
        self.id = f"bigquery:{self.project}.{self.dataset}"
        options = None
        credentials: Any = None
        if settings.bigquery_endpoint:
            # An emulator: no Google credentials exist or are needed.
            options = ClientOptions(api_endpoint=settings.bigquery_endpoint)
            credentials = AnonymousCredentials()  # type: ignore[no-untyped-call]
        elif settings.bigquery_credentials_file is not None:
            from google.oauth2 import service_account

            credentials = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
                str(settings.bigquery_credentials_file)
            )
        # Bounded retries: a warehouse that is away fails the sync in seconds, not minutes.
        self._retry = bigquery.DEFAULT_RETRY.with_timeout(settings.bigquery_request_timeout_s)
        self._job_retry = DEFAULT_JOB_RETRY.with_timeout(settings.bigquery_job_timeout_s)
        self._timeout = settings.bigquery_request_timeout_s
        self._job_timeout = settings.bigquery_job_timeout_s
        self.client = bigquery.Client(
            project=self.project,
            credentials=credentials,
            location=settings.bigquery_location,
            client_options=options,
        )

    def _table_id(self, name: str) -> str:
        return f"{self.project}.{self.dataset}.{name}"

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except (google_errors.GoogleAPIError, RequestException) as exc:
            raise WarehouseError(f"bigquery {what} ({self.id}): {exc}") from exc

    def _query(self, sql: str, config: bigquery.QueryJobConfig | None = None) -> bigquery.QueryJob:
        """Run a query job to completion (bounded by the configured timeouts)."""
        job = self.client.query(
            sql,
            job_config=config,
            retry=self._retry,
            timeout=self._timeout,
            job_retry=self._job_retry,
        )
        job.result(retry=self._retry, timeout=self._job_timeout, job_retry=self._job_retry)
        return job

    def ensure_schema(self) -> None:
        with self._errors("ensure_schema"):
            dataset = bigquery.Dataset(f"{self.project}.{self.dataset}")
            dataset.location = self.settings.bigquery_location
            self.client.create_dataset(
                dataset, exists_ok=True, retry=self._retry, timeout=self._timeout
            )
            for table in TABLES.values():
                definition = bigquery.Table(self._table_id(table.name), schema=schema(table))
                if table.partition:
                    definition.time_partitioning = bigquery.TimePartitioning(
                        type_=bigquery.TimePartitioningType.DAY, field=table.partition
                    )
                definition.clustering_fields = [
                    c for c in table.key if c != table.partition
                ] or None
                self.client.create_table(
                    definition, exists_ok=True, retry=self._retry, timeout=self._timeout
                )

    def _load(self, table: TableSpec, target: str, rows: Sequence[Row]) -> None:
        """Load ``rows`` into ``target`` (created or truncated), a chunk per load job."""
        config = bigquery.LoadJobConfig(
            schema=schema(table),
            source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
        )
        for start in range(0, len(rows), LOAD_CHUNK_ROWS):
            chunk = rows[start : start + LOAD_CHUNK_ROWS]
            body = "\n".join(
                json.dumps({n: _json_value(row.get(n)) for n in table.column_names})
                for row in chunk
            ).encode()
            job = self.client.load_table_from_file(
                io.BytesIO(body), target, job_config=config, num_retries=2, timeout=self._timeout
            )
            job.result(retry=self._retry, timeout=self._job_timeout)
            config.write_disposition = bigquery.WriteDisposition.WRITE_APPEND

    def _merge(self, table: TableSpec, rows: Sequence[Row], delete_missing: bool) -> int:
        target = self._table_id(table.name)
        staging = self._table_id(f"{table.name}__staging_{uuid.uuid4().hex[:12]}")
        names = table.column_names
        on = " AND ".join(f"T.{k} = S.{k}" for k in table.key)
        updates = ", ".join(f"{n} = S.{n}" for n in names if n not in table.key)
        sql = (
            f"MERGE `{target}` T USING `{staging}` S ON {on}"
            f" WHEN MATCHED THEN UPDATE SET {updates}"
            f" WHEN NOT MATCHED THEN INSERT ({', '.join(names)})"
            f" VALUES ({', '.join(f'S.{n}' for n in names)})"
        )
        if delete_missing:
            sql += " WHEN NOT MATCHED BY SOURCE THEN DELETE"
        try:
            self._load(table, staging, rows)
            self._query(sql)
        finally:
            self.client.delete_table(
                staging, not_found_ok=True, retry=self._retry, timeout=self._timeout
            )
        return len(rows)

    def upsert(self, table: str, rows: Sequence[Row]) -> int:
        if not rows:
            return 0
        with self._errors(f"upsert {table}"):
            return self._merge(spec(table), rows, delete_missing=False)

    def replace(self, table: str, rows: Sequence[Row]) -> int:
        t = spec(table)
        with self._errors(f"replace {table}"):
            if not rows:
                self._query(f"DELETE FROM `{self._table_id(t.name)}` WHERE TRUE")
                return 0
            return self._merge(t, rows, delete_missing=True)

    def delete_user(self, user_ids: Sequence[str]) -> int:
        if not user_ids:
            return 0
        deleted = 0
        config = bigquery.QueryJobConfig(
            query_parameters=[bigquery.ArrayQueryParameter("users", "STRING", list(user_ids))]
        )
        with self._errors("delete_user"):
            for table in USER_TABLES:
                job = self._query(
                    f"DELETE FROM `{self._table_id(table)}` WHERE user_id IN UNNEST(@users)",
                    config,
                )
                deleted += job.num_dml_affected_rows or 0
        return deleted

    def user_ids(self) -> set[str]:
        union = " UNION DISTINCT ".join(
            f"SELECT user_id FROM `{self._table_id(t)}`" for t in USER_TABLES
        )
        with self._errors("user_ids"):
            return {str(row["user_id"]) for row in self._query(union).result()}

    def read(self, table: str) -> list[Row]:
        t = spec(table)
        with self._errors(f"read {table}"):
            job = self._query(
                f"SELECT {', '.join(t.column_names)} FROM `{self._table_id(t.name)}`"
                f" ORDER BY {', '.join(t.key)}"
            )
            result = job.result(retry=self._retry, timeout=self._job_timeout)
            return [{n: _from_bigquery(k, row[n]) for n, k in t.columns} for row in result]

    def close(self) -> None:
        self.client.close()  # type: ignore[no-untyped-call]
