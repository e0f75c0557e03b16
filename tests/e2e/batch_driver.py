"""Runs in the jobs' environment (not the test runner's), for tests/e2e/test_erasure_everywhere.py:
one batch job (``embed`` or ``erase``) on a local SparkSession, then every Parquet row under the
batch data folder, printed as one JSON object (one JVM per step).

Usage: python batch_driver.py embed|erase DATA -- <the job's arguments>
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def rows(spark: Any, data: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(data.rglob("*.parquet")):
        if path.name.startswith((".", "_")):
            continue
        out += [
            {"file": str(path), **r.asDict(True)} for r in spark.read.parquet(str(path)).collect()
        ]
    return out


def main(job: str, data: str, job_args: list[str]) -> None:
    from mpp_jobs import embed, erase
    from mpp_jobs.common import spark_session

    spark = spark_session("e2e-erasure", "local[2]")
    if job == "embed":
        summary = embed.run(spark, embed.parser().parse_args(job_args))
    else:
        summary = erase.run(erase.parser().parse_args(job_args))  # the same session
    found = rows(spark, Path(data))
    spark.stop()
    sys.stdout.write(json.dumps({"summary": summary, "rows": found}, default=str) + "\n")


if __name__ == "__main__":
    split = sys.argv.index("--")
    main(sys.argv[1], sys.argv[2], sys.argv[split + 1 :])
