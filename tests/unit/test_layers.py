"""The layer contract (.importlinter) holds on this tree and catches a forbidden import.

The test command runs `lint-imports` on the checkout itself; here it also runs on a temporary
copy of the code with one import added that the layers forbid, to show that the contract
fails when it should (a contract that can never break checks nothing).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
CODE_DIRS = ("lib", "services", "jobs")


def source_path(root: Path) -> str:
    """PYTHONPATH that puts the tree at root first: its library, every service and the jobs."""
    services = sorted(p for p in (root / "services").iterdir() if p.is_dir())
    return os.pathsep.join(str(p) for p in [root / "lib", *services, root / "jobs"])


def lint_imports(root: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": source_path(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / ".importlinter"), "--cache-dir", str(cache)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def tree_copy(tmp_path: Path) -> Path:
    """The code and the contract, copied without caches, so edits never touch the checkout."""
    copy = tmp_path / "tree"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache")
    for name in CODE_DIRS:
        shutil.copytree(ROOT / name, copy / name, ignore=ignore)
    shutil.copy(ROOT / ".importlinter", copy / ".importlinter")
    return copy


def add_import(module: Path, statement: str) -> None:
    """Append an import at module level (after the module's own imports is enough for grimp)."""
    module.write_text(module.read_text() + f"\n{statement}  # noqa: E402,F401\n")


def test_the_checkout_keeps_every_contract(tmp_path: Path) -> None:
    result = lint_imports(ROOT, tmp_path / "cache")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "statement", "broken"),
    [
        # Runtime importing a service: the lowest layer reaching the highest.
        ("lib/mpp/logs.py", "import mpp_recommender", "mpp.logs is not allowed to import"),
        # One service importing another: services are independent of each other.
        (
            "services/ingest/mpp_ingest/__init__.py",
            "import mpp_analytics",
            "mpp_ingest is not allowed to import mpp_analytics",
        ),
        # A service importing the dev tooling that no image ships.
        (
            "services/ingest/mpp_ingest/__init__.py",
            "import mpp.stack",
            "mpp_ingest is not allowed to import mpp.stack",
        ),
    ],
)
def test_a_forbidden_import_breaks_the_contract(
    tree_copy: Path, tmp_path: Path, module: str, statement: str, broken: str
) -> None:
    add_import(tree_copy / module, statement)
    result = lint_imports(tree_copy, tmp_path / "cache")
    assert result.returncode == 1, result.stdout + result.stderr
    assert broken in result.stdout, result.stdout
