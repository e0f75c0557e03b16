"""Runs in the jobs environment (not the test runner's): the embedding job twice on one local
SparkSession (one JVM and one model load for both runs), then reads what it wrote and prints
it as JSON for tests/batch/test_embed_job.py.

Usage: python embed_driver.py OUT_JSON -- <embed job arguments>
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def files(folder: Path) -> dict[str, int]:
    """Data files under ``folder`` with their sizes (Spark's .crc and markers left out)."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): p.stat().st_size
        for p in sorted(folder.rglob("*.parquet"))
        if not p.name.startswith(".")
    }


def main(out_json: str, job_args: list[str]) -> None:
    from mpp_jobs import embed
    from mpp_jobs.common import spark_session

    args = embed.parser().parse_args(job_args)
    output = Path(args.output)
    spark = spark_session("embed-test", args.master)
    try:
        first = embed.run(spark, args)
        after_first = files(output)
        second = embed.run(spark, embed.parser().parse_args(job_args))
        after_second = files(output)
        enriched = [r.asDict(True) for r in spark.read.parquet(f"{output}/enriched").collect()]
        rejects = [r.asDict(True) for r in spark.read.parquet(f"{output}/rejects").collect()]
    finally:
        spark.stop()
    for row in enriched:
        # Bytes and times as JSON can carry them.
        row["enriched"] = row["enriched"].hex()
        row["timestamp"] = row["timestamp"].isoformat()
        row["enriched_at"] = row["enriched_at"].isoformat()
        row["day"] = str(row["day"])
    for row in rejects:
        row["rejected_at"] = row["rejected_at"].isoformat()
    result: dict[str, Any] = {
        "first": first,
        "second": second,
        "files_after_first": after_first,
        "files_after_second": after_second,
        "enriched": enriched,
        "rejects": rejects,
    }
    Path(out_json).write_text(json.dumps(result))


if __name__ == "__main__":
    split = sys.argv.index("--")
    main(sys.argv[1], sys.argv[split + 1 :])
