"""Virtual environments of their own, for tools whose pins clash with the project's.

The BigQuery emulator and the batch path (Spark jobs, Airflow) each get one, keyed by the
SHA-256 of a pinned requirements file: ``<cache>/venvs/<prefix>-<16 hex>-py<X.Y>``. Each is
built once per machine with the uv that ``scripts/bootstrap.sh`` pins (under
``<cache>/tools``), under a file lock so that two test sessions never build the same one at
once, and marked finished by a ``.complete`` file; every clone reuses it.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from mpp.stack.base import Progress, StackError, run_checked

# scripts/bootstrap.sh installs this uv (its uv_version); tests/deploy check that they agree.
UV_VERSION = "0.13.8"


def pinned_uv(cache_dir: Path) -> str:
    """The pinned uv that bootstrap installed, else one on PATH."""
    pinned = cache_dir / "tools" / f"uv-{UV_VERSION}" / "bin" / "uv"
    if pinned.exists():
        return str(pinned)
    found = shutil.which("uv")
    if found is None:
        raise StackError(
            f"uv not found at {pinned} nor on PATH; run scripts/bootstrap.sh (it installs "
            f"the pinned uv {UV_VERSION})"
        )
    return found


def python_version(python: str) -> str:
    """``X.Y`` of an interpreter."""
    if python == sys.executable:
        return f"{sys.version_info.major}.{sys.version_info.minor}"
    out = subprocess.run(
        [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def venv_path(cache_dir: Path, prefix: str, requirements: Path, python: str) -> Path:
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]
    return cache_dir / "venvs" / f"{prefix}-{digest}-py{python_version(python)}"


def ensure_venv(
    cache_dir: Path,
    prefix: str,
    requirements: Path,
    progress: Progress,
    python: str = sys.executable,
    after: Callable[[Path], None] | None = None,
) -> Path:
    """The environment of ``requirements``, built first if missing (``after`` runs once the
    packages are in, before the build counts as finished). Returns its folder."""
    venv = venv_path(cache_dir, prefix, requirements, python)
    if (venv / ".complete").exists():
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    with (venv.parent / f"{venv.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / ".complete").exists():
            progress(f"building the environment {venv} from {requirements.name} (once)")
            if venv.exists():
                shutil.rmtree(venv)
            uv = pinned_uv(cache_dir)
            run_checked([uv, "venv", "--quiet", "--python", python, str(venv)], "uv venv")
            run_checked(
                [
                    uv,
                    "pip",
                    "install",
                    "--quiet",
                    "--python",
                    str(venv / "bin" / "python"),
                    "-r",
                    str(requirements),
                ],
                f"uv pip install -r {requirements}",
            )
            if after is not None:
                after(venv)
            (venv / ".complete").write_text("ok\n")
    return venv
