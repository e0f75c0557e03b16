"""The batch path's cached virtual environments, built once per machine with the pinned uv.

Two environments, each keyed by the hash of its pinned requirements (and the Python version),
under ``$MPP_CACHE_DIR/venvs`` (``~/.cache/mpp/venvs``), as the BigQuery emulator's is
(``mpp.stack.bigquery``):

- ``jobs``: ``jobs/requirements.txt``, the project's dependencies at uv.lock's versions plus
  pyspark. The project's own code is *not* installed into it: one cached environment serves
  every clone, and ``job_env`` puts the clone's ``lib``, ``services/*`` and ``jobs`` on
  ``PYTHONPATH`` (the job image installs the project instead);
- ``airflow``: ``dags/requirements.txt``, Airflow 3 and the cncf-kubernetes provider, to load
  and inspect the DAG.

Building is ``mpp.stack.venvs``'s (the pinned uv, a file lock, a ``.complete`` marker); run
with the project's interpreter (``.venv/bin/python -m mpp.stack.job_venvs jobs``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mpp.stack import venvs as shared
from mpp.stack.base import Progress, cache_dir

REPO_ROOT = Path(__file__).resolve().parents[3]
REQUIREMENTS = {
    "jobs": REPO_ROOT / "jobs" / "requirements.txt",
    "airflow": REPO_ROOT / "dags" / "requirements.txt",
}
# What the jobs import from the clone (the project's packages live in these folders).
SOURCE_DIRS = ("lib", "services/ingest", "services/embedder", "services/analytics", "jobs")


def venv_path(name: str, python: str | None = None) -> Path:
    """``<cache>/venvs/mpp-<name>-<16 hex of the requirements' SHA-256>-py3.11``."""
    return shared.venv_path(
        cache_dir(), f"mpp-{name}", REQUIREMENTS[name], python or sys.executable
    )


def ensure_venv(name: str, progress: Progress | None = None, python: str | None = None) -> Path:
    """The environment ``name`` ("jobs" or "airflow"), built first if missing. Returns its
    folder (``<folder>/bin/python`` is its interpreter)."""
    if name not in REQUIREMENTS:
        raise ValueError(f"unknown environment {name!r}; one of {', '.join(REQUIREMENTS)}")
    return shared.ensure_venv(
        cache_dir(),
        f"mpp-{name}",
        REQUIREMENTS[name],
        progress or _stderr,
        python=python or sys.executable,
    )


def _stderr(message: str) -> None:
    sys.stderr.write(f"batch: {message}\n")
    sys.stderr.flush()


def job_env(base: dict[str, str] | None = None, repo: Path = REPO_ROOT) -> dict[str, str]:
    """Environment variables that run the jobs from this clone's sources."""
    env = dict(os.environ if base is None else base)
    paths = [str(repo / d) for d in SOURCE_DIRS]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    # Spark's Python workers must use the environment's interpreter, not whatever is on PATH.
    env.setdefault("PYSPARK_PYTHON", str(venv_path("jobs") / "bin" / "python"))
    return env


if __name__ == "__main__":
    names = sys.argv[1:] or list(REQUIREMENTS)
    for env_name in names:
        sys.stdout.write(f"{ensure_venv(env_name)}\n")
