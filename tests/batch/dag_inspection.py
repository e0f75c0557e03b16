"""The DAG as Airflow loads it, inspected offline: tests/batch/inspect_dag.py run in Airflow's
own environment for one data interval, its findings read back as JSON (tests/batch/test_dag.py
and tests/cluster/test_batch_pods.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .conftest import REPO, run_python

DAG_ID = "marketing_personalization_pipeline"
INTERVAL = ("2026-11-27T00:00:00+00:00", "2026-11-28T00:00:00+00:00")


def inspect(airflow_python: Path, tmp_path: Path, dags: Path, **env: str) -> dict[str, Any]:
    out = tmp_path / "dag.json"
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        **env,
    }
    run_python(
        airflow_python,
        [str(REPO / "tests/batch/inspect_dag.py"), str(dags), DAG_ID, *INTERVAL, str(out)],
        environment,
        timeout_s=120,
    )
    return dict(json.loads(out.read_text()))
