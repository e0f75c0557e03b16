"""Batch embedding (backfill): raw chat events in, enriched messages and rejects out.

The stream's own code does every step, so both paths accept the same events and produce the
same records:

1. each raw event (a JSON line, or a Parquet row turned into the same JSON object) is decoded
   by ``mpp.codecs.decode_raw_event`` and validated, normalized and redacted by
   ``mpp.validation.validate_event``, which derives the stable ``message_id``
   (``mpp.ids``) exactly as the ingest service does; an event it refuses becomes a reject row
   with the machine-readable reason (``ErrorCode`` name, field, detail) and the original line;
2. valid messages of the date range ``[--from, --to)`` (UTC days of their timestamps), one per
   message_id, are embedded, intent-tagged and campaign-linked in ``mapPartitions`` by the
   embedder service's ``Enricher`` (``mpp.enrich.build_enricher``): the model loads
   once per Python worker (Spark reuses workers, so once per executor core), never per row;
3. the results are written idempotently by message_id:
   - ``--output DIR`` (required: the rejects always land there): Parquet ``DIR/enriched``
     (partitioned by ``day``) and ``DIR/rejects``.
     ``--mode new`` (default) skips every message_id already there before embedding, so a
     re-run embeds and writes nothing; ``--mode replace`` re-enriches the range and overwrites
     its day partitions (after a model or catalog change);
   - ``--kafka``: the ``EnrichedMessage`` protobufs of the rows written are produced to the
     enriched topic (``MPP_KAFKA__TOPICS__ENRICHED``), keyed by user_id, so the running
     vector-writer, graph-writer and analytics upsert them as they do the stream's. Kafka is
     written and flushed before the Parquet output, which is the job's commit: a failed run is
     re-run, and the writers' upserts absorb the repeat.

The campaign catalog is read like the embedder service reads it (``--campaigns postgres``),
or from a catalog file (``--campaigns FILE``, the ``mpp catalog load-campaigns`` formats), or
left empty (``--campaigns none``: only the campaign an event names is linked).

Run: ``spark-submit jobs/mpp_jobs/embed.py --input RAW --output OUT --from 2026-11-27``, or
``python -m mpp_jobs.embed ...`` (Spark local mode). Prints a JSON summary as its last line.

This module runs the job and holds step 2; the schemas, step 1 and step 3's outputs are in
mpp_jobs.embed_io.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in (None, ""):  # spark-submit runs this file as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mpp_jobs.common import (
    DateRange,
    add_spark_options,
    emit_summary,
    executor_count,
    spark_session,
    store_failures,
)
from mpp_jobs.embed_io import (
    enriched_row,
    enriched_schema,
    known_ids,
    produce_to_kafka,
    read_raw,
    validate_rows,
    validated_schema,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from mpp.enrich import Enricher

# Texts handed to one Enricher.enrich call: large enough that padding stays small (each encode
# call sorts its texts by length), small enough to keep a worker's memory flat.
ENRICH_CHUNK = 512


# -- step 2: enrichment (the embedder service's code) ----------------------------------------

# One Enricher per Python worker process and configuration: Spark reuses its workers, so the
# model is loaded once per worker, whatever the number of partitions it handles.
_ENRICHERS: dict[str, Enricher] = {}


def _enricher(embedder_config: str, campaigns: list[dict[str, Any]]) -> Enricher:
    key = embedder_config + json.dumps(campaigns, sort_keys=True)
    if key not in _ENRICHERS:
        from mpp.catalog import Campaign
        from mpp.config import EmbedderSettings, Settings
        from mpp.embedding import Embedder
        from mpp.enrich import build_enricher

        cfg = EmbedderSettings.model_validate_json(embedder_config)
        # One task per core: each worker encodes on its own thread, as one shard would.
        embedder = Embedder(
            cfg.model,
            project_to_dim=cfg.project_to_dim,
            batch_size=cfg.encode_batch_size,
            device=cfg.device,
            torch_threads=cfg.torch_threads or 1,
            encode_workers=1,
        )
        enricher = build_enricher(Settings(embedder=cfg), embedder)
        enricher.linker.update([Campaign.model_validate(c) for c in campaigns])
        _ENRICHERS[key] = enricher
    return _ENRICHERS[key]


def enrich_rows(
    rows: Iterable[Any], embedder_config: str, campaigns: list[dict[str, Any]]
) -> Iterator[tuple[Any, ...]]:
    """Rows with a ``validated`` ValidatedMessage -> rows of ``enriched_schema``."""
    from mpp.v1 import events_pb2 as pb

    enricher: Enricher | None = None
    chunk: list[pb.ValidatedMessage] = []

    def flush() -> Iterator[tuple[Any, ...]]:
        nonlocal enricher
        if enricher is None:
            enricher = _enricher(embedder_config, campaigns)
        for enriched in enricher.enrich(chunk):
            yield enriched_row(enriched)
        chunk.clear()

    for row in rows:
        chunk.append(pb.ValidatedMessage.FromString(row["validated"]))
        if len(chunk) >= ENRICH_CHUNK:
            yield from flush()
    if chunk:
        yield from flush()


def load_campaigns(source: str) -> list[dict[str, Any]]:
    """The campaign catalog as JSON-able dicts: from PostgreSQL (as the embedder service
    reads it), a catalog file, or none."""
    if source == "none":
        return []
    if source == "postgres":
        from mpp.config import Settings
        from mpp.stores.campaigns import read_campaigns

        campaigns = read_campaigns(Settings())
    else:
        from mpp.catalog import parse_campaigns

        campaigns = parse_campaigns(Path(source))
    return [c.model_dump(mode="json") for c in campaigns]


def run(spark: SparkSession, args: argparse.Namespace) -> dict[str, Any]:
    """The whole job on ``spark``; returns the run's figures."""
    from pyspark.sql import functions as F

    from mpp.config import Settings
    from mpp.validation import Rules

    started = time.monotonic()
    settings = Settings()
    days = DateRange.parse(args.date_from, args.date_to)
    now = datetime.fromisoformat(args.now) if args.now else datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError(f"--now {args.now!r} has no time zone; add Z or an offset like +01:00")
    rules = Rules.from_settings(settings.ingest)
    out = args.output.rstrip("/")

    raw = read_raw(spark, args.input, args.input_format)
    checked = spark.createDataFrame(
        raw.mapPartitions(lambda rows: validate_rows(rows, rules, now)), validated_schema()
    ).persist()

    valid = checked.where(F.col("ok"))
    in_range = valid
    if days is not None:
        in_range = valid.where(
            (F.col("day") >= days.start.isoformat()) & (F.col("day") < days.end.isoformat())
        )
    # One row per message_id (a replayed event derives the same id); the smallest record
    # wins, so that the choice does not depend on partitioning.
    unique = in_range.groupBy("message_id").agg(
        F.min("day").alias("day"), F.min("validated").alias("validated")
    )
    enriched_path = f"{out}/enriched"
    todo = unique
    if args.mode == "new":
        known = known_ids(spark, enriched_path, "message_id")
        if known is not None:
            todo = unique.join(known, "message_id", "left_anti")
    todo = todo.repartition(args.partitions or spark.sparkContext.defaultParallelism, "message_id")

    embedder_config = settings.embedder.model_dump_json()
    campaigns = load_campaigns(args.campaigns)
    enriched = spark.createDataFrame(
        todo.rdd.mapPartitions(lambda rows: enrich_rows(rows, embedder_config, campaigns)),
        enriched_schema(),
    ).persist()
    written = enriched.count()

    produced = 0
    if args.kafka and written:
        kafka_json = settings.kafka.model_dump_json()
        topic = settings.kafka.topics.enriched
        produced = sum(
            enriched.select("enriched", "user_id")
            .rdd.mapPartitions(lambda rows: produce_to_kafka(rows, kafka_json, topic))
            .collect()
        )
    if written or args.mode == "replace":
        writer = enriched.write.partitionBy("day")
        writer.mode("overwrite" if args.mode == "replace" else "append").parquet(enriched_path)

    rejects = checked.where(~F.col("ok")).select(
        "reject_id", "reason", "field", "detail", "raw", "source_file"
    )
    rejects = rejects.dropDuplicates(["reject_id"])
    new_rejects = rejects
    known_rejects = known_ids(spark, f"{out}/rejects", "reject_id")
    if known_rejects is not None:
        new_rejects = rejects.join(known_rejects, "reject_id", "left_anti")
    new_rejects = new_rejects.withColumn("rejected_at", F.lit(now)).persist()
    rejected = new_rejects.count()
    if rejected:
        new_rejects.coalesce(1).write.mode("append").parquet(f"{out}/rejects")
    reasons = {r["reason"]: r["count"] for r in new_rejects.groupBy("reason").count().collect()}

    summary = {
        "job": "embed",
        "input": args.input,
        "output": out,
        "range": [days.start.isoformat(), days.end.isoformat()] if days else None,
        "mode": args.mode,
        "events_valid": valid.count(),
        "messages_in_range": unique.count(),
        "written": written,
        "skipped_existing": unique.count() - written if args.mode == "new" else 0,
        "produced": produced,
        "rejected": rejected,
        "reject_reasons": reasons,
        "campaigns": len(campaigns),
        "executors": executor_count(spark),
        "seconds": round(time.monotonic() - started, 2),
    }
    for frame in (checked, enriched, new_rejects):
        frame.unpersist()
    return summary


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mpp_jobs.embed", description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True, help="raw events: JSON Lines or Parquet (a path)")
    p.add_argument("--input-format", default="auto", choices=("auto", "json", "parquet"))
    p.add_argument(
        "--output", required=True, help="Parquet output folder (enriched/ and rejects/ inside)"
    )
    p.add_argument("--kafka", action="store_true", help="produce to the enriched topic too")
    p.add_argument("--from", dest="date_from", help="first UTC day, e.g. 2026-11-27")
    p.add_argument("--to", dest="date_to", help="day after the last (default: --from + 1)")
    p.add_argument("--mode", default="new", choices=("new", "replace"))
    p.add_argument(
        "--campaigns", default="postgres", help="postgres (default), none, or a catalog file"
    )
    p.add_argument("--partitions", type=int, default=0, help="enrichment partitions")
    p.add_argument("--now", help="validation clock (RFC 3339); default: the current time")
    p.add_argument("--summary", help="also write the JSON summary to this file")
    add_spark_options(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    spark = spark_session("mpp-batch-embed", args.master)
    try:
        with store_failures("embed"):
            emit_summary(run(spark, args), args.summary)
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    # Run from the importable module, not __main__: Spark then ships its functions to the
    # workers by reference, and the workers' model cache (_ENRICHERS) lives across tasks.
    from mpp_jobs.embed import main as module_main

    sys.exit(module_main())
