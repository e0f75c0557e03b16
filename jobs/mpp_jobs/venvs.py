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

Building is idempotent and safe to race: one process builds under a file lock while another
waits; a finished environment carries a ``.complete`` marker, so a build killed halfway is
started again. Standard library only: it runs from any interpreter (the test runner's, or
``python3 jobs/mpp_jobs/venvs.py jobs``).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

UV_VERSION = "0.13.8"
REPO_ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = {
    "jobs": REPO_ROOT / "jobs" / "requirements.txt",
    "airflow": REPO_ROOT / "dags" / "requirements.txt",
}
# What the jobs import from the clone (the project's packages live in these folders).
SOURCE_DIRS = ("lib", "services/ingest", "services/embedder", "services/analytics", "jobs")

Progress = Callable[[str], None]


class VenvError(RuntimeError):
    """An environment could not be built; the message holds the failing command's output."""


def cache_dir() -> Path:
    return Path(os.environ.get("MPP_CACHE_DIR", Path.home() / ".cache" / "mpp"))


def venv_path(name: str, python: str | None = None) -> Path:
    """``<cache>/venvs/mpp-<name>-<16 hex of the requirements' SHA-256>-py3.11``."""
    digest = hashlib.sha256(REQUIREMENTS[name].read_bytes()).hexdigest()[:16]
    version = _python_version(python or sys.executable)
    return cache_dir() / "venvs" / f"mpp-{name}-{digest}-py{version}"


def _python_version(python: str) -> str:
    if python == sys.executable:
        return f"{sys.version_info.major}.{sys.version_info.minor}"
    out = subprocess.run(
        [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def _uv() -> str:
    pinned = cache_dir() / "tools" / f"uv-{UV_VERSION}" / "bin" / "uv"
    if pinned.exists():
        return str(pinned)
    found = shutil.which("uv")
    if found is None:
        raise VenvError(
            f"uv not found at {pinned} nor on PATH; run scripts/bootstrap.sh (it installs "
            f"the pinned uv {UV_VERSION})"
        )
    return found


def _run(argv: list[str], what: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()[-3000:]
        raise VenvError(f"{what} failed (exit {result.returncode}):\n{output}")


def ensure_venv(name: str, progress: Progress | None = None, python: str | None = None) -> Path:
    """The environment ``name`` ("jobs" or "airflow"), built first if missing. Returns its
    folder (``<folder>/bin/python`` is its interpreter)."""
    if name not in REQUIREMENTS:
        raise ValueError(f"unknown environment {name!r}; one of {', '.join(REQUIREMENTS)}")
    python = python or sys.executable
    venv = venv_path(name, python)
    if (venv / ".complete").exists():
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    with (venv.parent / f"{venv.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / ".complete").exists():
            _build(name, venv, python, progress or _stderr)
    return venv


def _build(name: str, venv: Path, python: str, progress: Progress) -> None:
    started = time.monotonic()
    progress(f"batch: building the {name} environment {venv} (once per machine)")
    if venv.exists():
        shutil.rmtree(venv)
    uv = _uv()
    _run([uv, "venv", "--quiet", "--python", python, str(venv)], f"uv venv ({name})")
    _run(
        [
            uv,
            "pip",
            "install",
            "--quiet",
            "--python",
            str(venv / "bin" / "python"),
            "-r",
            str(REQUIREMENTS[name]),
        ],
        f"uv pip install -r {REQUIREMENTS[name].relative_to(REPO_ROOT)}",
    )
    (venv / ".complete").write_text("ok\n")
    progress(f"batch: {name} environment ready in {time.monotonic() - started:.1f}s")


def _stderr(message: str) -> None:
    sys.stderr.write(message + "\n")
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
