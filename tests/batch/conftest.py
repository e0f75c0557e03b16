"""The batch path's tests: the jobs run in Spark local mode and the DAG loads in Airflow, each
in its own cached virtualenv (``mpp.stack.job_venvs``, built here on a fresh machine), as
subprocesses of the test runner."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "jobs"))

from mpp.stack import job_venvs as venvs  # noqa: E402

# Seconds a batch test may take when its setup builds an environment on a fresh machine
# (pyspark alone is a few hundred MB; torch's wheels are in uv's cache already, from the
# project's own environment).
BUILD_TIMEOUT_S = 1200


@pytest.fixture(scope="session")
def jobs_python() -> Path:
    return venvs.ensure_venv("jobs") / "bin" / "python"


@pytest.fixture(scope="session")
def airflow_python() -> Path:
    return venvs.ensure_venv("airflow") / "bin" / "python"


def run_python(
    python: Path,
    argv: Sequence[str],
    env: dict[str, str],
    timeout_s: float = 240,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``python argv`` from the repository root; on failure, show its output."""
    started = time.monotonic()
    result = subprocess.run(
        [str(python), *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    took = time.monotonic() - started
    sys.stderr.write(f"[batch] {' '.join(argv[:3])}: exit {result.returncode} in {took:.1f}s\n")
    if check and result.returncode != 0:
        raise AssertionError(
            f"{argv} exited {result.returncode}\n--- stdout\n{result.stdout[-4000:]}"
            f"\n--- stderr\n{result.stderr[-6000:]}"
        )
    return result


def last_json(stdout: str) -> dict[str, Any]:
    """The JSON summary a job prints as its last line."""
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert lines, f"no JSON summary in the output:\n{stdout[-2000:]}"
    return dict(json.loads(lines[-1]))


def settings_env(settings: Any) -> dict[str, str]:
    """The MPP_ variables that point a job at the same servers and database as ``settings``."""
    pg = settings.postgres
    env = {
        "MPP_POSTGRES__HOST": pg.host,
        "MPP_POSTGRES__PORT": str(pg.port),
        "MPP_POSTGRES__USER": pg.user,
        "MPP_POSTGRES__DATABASE": pg.database,
        "MPP_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "MPP_KAFKA__TOPICS__ENRICHED": settings.kafka.topics.enriched,
        "MPP_LOG_LEVEL": "WARNING",
    }
    if pg.password is not None:
        env["MPP_POSTGRES__PASSWORD"] = pg.password.get_secret_value()
    return env
