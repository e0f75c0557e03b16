"""The observability servers' binaries, built from source by scripts/install_observability.sh.

The script builds Jaeger, Prometheus and promtool through the Go module proxy into
~/.cache/mpp/observability/<name>-<version>/bin (once; a finished build is reused at once).
``binary`` asks it for a built one and runs the build when there is none, its progress in a
log file beside the server's.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from mpp.stack.base import Progress, StackError, tail

SCRIPT = Path("scripts") / "install_observability.sh"


def installed(repo_root: Path, name: str, cache_dir: Path) -> Path | None:
    """The built binary's path, or None when it is not built yet."""
    result = subprocess.run(
        ["bash", str(repo_root / SCRIPT), "--installed", name],
        capture_output=True,
        text=True,
        env=dict(os.environ, MPP_CACHE_DIR=str(cache_dir)),
        check=False,
    )
    if result.returncode != 0:
        return None
    path = Path(result.stdout.strip())
    return path if path.is_file() else None


def binary(
    repo_root: Path, names: tuple[str, ...], cache_dir: Path, log_file: Path, progress: Progress
) -> list[Path]:
    """The binaries ``names`` (built first when missing; the first build takes minutes)."""
    found = [installed(repo_root, name, cache_dir) for name in names]
    missing = [name for name, path in zip(names, found, strict=True) if path is None]
    if missing:
        progress(
            f"building {', '.join(missing)} from source with Go (first time only, about 12 "
            f"minutes each on two cores; log: {log_file})"
        )
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("ab") as log:
            result = subprocess.run(
                ["bash", str(repo_root / SCRIPT), *missing],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(os.environ, MPP_CACHE_DIR=str(cache_dir)),
                check=False,
            )
        if result.returncode != 0:
            raise StackError(
                f"building {', '.join(missing)} failed (exit {result.returncode}); see "
                f"{log_file}:\n{tail(log_file)}"
            )
        found = [installed(repo_root, name, cache_dir) for name in names]
    paths = [path for path in found if path is not None]
    if len(paths) != len(names):
        raise StackError(f"{', '.join(names)}: not found after the build; see {log_file}")
    return paths
