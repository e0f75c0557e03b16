"""The batch embedding job's data: its Spark schemas, reading raw events and validating them
with the ingest service's code (step 1), the enriched row layout, and the idempotent outputs
(step 3). mpp_jobs.embed runs the job; the enrichment step (step 2) is there."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

SERVICE = "batch-embed"


def _spark_types() -> Any:
    from pyspark.sql import types as T

    return T


def validated_schema() -> Any:
    T = _spark_types()
    return T.StructType(
        [
            T.StructField("ok", T.BooleanType(), False),
            T.StructField("message_id", T.StringType(), True),
            T.StructField("day", T.StringType(), True),
            T.StructField("validated", T.BinaryType(), True),
            T.StructField("reject_id", T.StringType(), True),
            T.StructField("reason", T.StringType(), True),
            T.StructField("field", T.StringType(), True),
            T.StructField("detail", T.StringType(), True),
            T.StructField("raw", T.StringType(), True),
            T.StructField("source_file", T.StringType(), True),
        ]
    )


def enriched_schema() -> Any:
    T = _spark_types()
    return T.StructType(
        [
            T.StructField("message_id", T.StringType(), False),
            T.StructField("user_id", T.StringType(), False),
            T.StructField("timestamp", T.TimestampType(), False),
            T.StructField("timestamp_ms", T.LongType(), False),
            T.StructField("text", T.StringType(), False),
            T.StructField("channel", T.StringType(), False),
            T.StructField("locale", T.StringType(), False),
            T.StructField("event_campaign_id", T.StringType(), False),
            T.StructField("message_id_derived", T.BooleanType(), False),
            T.StructField("redactions", T.ArrayType(T.StringType()), False),
            T.StructField("embedding", T.ArrayType(T.FloatType()), False),
            T.StructField(
                "intents",
                T.ArrayType(
                    T.StructType(
                        [
                            T.StructField("intent", T.StringType()),
                            T.StructField("score", T.FloatType()),
                        ]
                    )
                ),
                False,
            ),
            T.StructField(
                "campaigns",
                T.ArrayType(
                    T.StructType(
                        [
                            T.StructField("campaign_id", T.StringType()),
                            T.StructField("score", T.FloatType()),
                            T.StructField("source", T.StringType()),
                        ]
                    )
                ),
                False,
            ),
            T.StructField("model", T.StringType(), False),
            T.StructField("dimension", T.IntegerType(), False),
            T.StructField("enriched_at", T.TimestampType(), False),
            # The EnrichedMessage itself: what --kafka sends, byte for byte.
            T.StructField("enriched", T.BinaryType(), False),
            T.StructField("day", T.StringType(), False),
        ]
    )


def reject_id(raw: bytes) -> str:
    """A rejected event's key: the same bytes are one reject however often they are read."""
    return "r-" + hashlib.sha256(raw).hexdigest()[:32]


# -- step 1: validation (the ingest service's code) ------------------------------------------


def validate_rows(
    rows: Iterable[tuple[str | None, bytes]], rules: Any, now: datetime
) -> Iterator[tuple[Any, ...]]:
    """(source file, raw bytes) -> rows of ``validated_schema``: the ValidatedMessage, or the
    Rejection's code, field and detail with the original line."""
    from mpp.codecs import Rejection, decode_raw_event
    from mpp.v1 import events_pb2
    from mpp.validation import validate_event

    for source, raw in rows:
        if not raw.strip():
            continue  # blank lines carry no event (ingest never sees them either)
        try:
            message = validate_event(decode_raw_event(raw), rules, now)
        except Rejection as rejection:
            code, field, detail = rejection.code, rejection.field, rejection.detail
        except Exception as exc:  # a bug must not lose the record: it is rejected, as in ingest
            code, field, detail = events_pb2.ERROR_CODE_PROCESSING_FAILED, "", repr(exc)
        else:
            message.ingested_at.FromDatetime(now)
            day = message.timestamp.ToDatetime(tzinfo=UTC).date().isoformat()
            yield (True, message.message_id, day, message.SerializeToString(), *([None] * 6))
            continue
        yield (
            False,
            None,
            None,
            None,
            reject_id(raw),
            events_pb2.ErrorCode.Name(code),  # type: ignore[arg-type]
            field,
            detail,
            raw.decode("utf-8", errors="replace"),
            source,
        )


def _parquet_event(row: dict[str, Any]) -> bytes:
    """A Parquet row as the JSON object a producer would have sent (nulls left out)."""
    record = {key: value for key, value in row.items() if value is not None}
    return json.dumps(record, ensure_ascii=False, default=str).encode("utf-8")


def read_raw(spark: SparkSession, path: str, fmt: str) -> Any:
    """An RDD of (source file, raw event bytes)."""
    if fmt == "auto":
        fmt = "parquet" if path.rstrip("/").endswith(".parquet") or _has_parquet(path) else "json"
    if fmt == "parquet":
        from pyspark.sql import functions as F

        T = _spark_types()
        frame = spark.read.parquet(path)
        columns = frame.columns
        # Timestamps travel as epoch milliseconds (which the codec accepts): exact, and never
        # shifted by a Python worker's local time zone.
        selected = [
            F.unix_millis(F.col(f.name)).alias(f.name)
            if isinstance(f.dataType, T.TimestampType | T.TimestampNTZType)
            else F.col(f.name)
            for f in frame.schema.fields
        ]
        return frame.select("_metadata.file_path", *selected).rdd.map(
            lambda r: (r[0], _parquet_event(dict(zip(columns, r[1:], strict=True))))
        )
    if fmt != "json":
        raise ValueError(f"--input-format {fmt!r}: one of auto, json, parquet")
    # Lines are kept byte for byte: a malformed line must become a reject, not vanish.
    lines = spark.read.text(path).select("_metadata.file_path", "value")
    return lines.rdd.map(lambda r: (r[0], r[1].encode("utf-8")))


def _has_parquet(path: str) -> bool:
    local = Path(path)
    return local.is_dir() and any(local.rglob("*.parquet"))


def enriched_row(enriched: Any) -> tuple[Any, ...]:
    from mpp.v1 import events_pb2 as pb

    m = enriched.message
    at = m.timestamp.ToDatetime(tzinfo=UTC)
    return (
        m.message_id,
        m.user_id,
        at,
        m.timestamp.ToMilliseconds(),
        m.text,
        m.channel,
        m.locale,
        m.campaign_id,
        m.message_id_derived,
        list(m.redactions),
        list(enriched.embedding),
        [(i.intent, i.score) for i in enriched.intents],
        [
            (c.campaign_id, c.score, pb.CampaignLinkSource.Name(c.source).rsplit("_", 1)[-1])
            for c in enriched.campaigns
        ],
        enriched.model,
        enriched.dimension,
        enriched.enriched_at.ToDatetime(tzinfo=UTC),
        enriched.SerializeToString(),
        at.date().isoformat(),
    )


# -- step 3: idempotent outputs ---------------------------------------------------------------


def path_exists(spark: SparkSession, path: str) -> bool:
    # Through Hadoop's FileSystem, so that object-store paths are answered too.
    context: Any = spark.sparkContext
    hadoop_path = context._jvm.org.apache.hadoop.fs.Path(path)
    fs = hadoop_path.getFileSystem(context._jsc.hadoopConfiguration())
    return bool(fs.exists(hadoop_path))


def known_ids(spark: SparkSession, path: str, column: str) -> DataFrame | None:
    if not path_exists(spark, path):
        return None
    try:
        return spark.read.parquet(path).select(column).distinct()
    except Exception as exc:  # an empty folder (e.g. a run that wrote nothing yet)
        if "UNABLE_TO_INFER_SCHEMA" in str(exc) or "Unable to infer schema" in str(exc):
            return None
        raise


def produce_to_kafka(rows: Iterable[Any], kafka_json: str, topic: str) -> Iterator[int]:
    """Send one partition's EnrichedMessages; ``flush`` raises if any was not acknowledged."""
    from mpp.config import KafkaSettings
    from mpp.kafka import TrackedProducer

    producer = TrackedProducer(KafkaSettings.model_validate_json(kafka_json), SERVICE)
    sent = 0
    for row in rows:
        producer.produce(topic, row["enriched"], key=row["user_id"])
        sent += 1
    producer.flush()
    yield sent
