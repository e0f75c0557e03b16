"""scripts/install_helm.sh: the pinned helm, built once outside the clone, then reused."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import CI_VALUES, DEFAULTS, REPO, run_helm

SCRIPT = REPO / "scripts" / "install_helm.sh"

pytestmark = pytest.mark.timeout(1800)


def pinned_version() -> str:
    match = re.search(r'version="\$\{MPP_HELM_VERSION:-(v3\.[0-9.]+)\}"', SCRIPT.read_text())
    assert match, "install_helm.sh no longer pins a helm v3 version"
    return match.group(1)


def test_helm_lives_outside_the_clone_under_its_version(helm: Path) -> None:
    assert not helm.resolve().is_relative_to(REPO)
    assert helm.parent.name == f"helm-{pinned_version()}"
    result = run_helm(helm, "version", "--short")
    assert result.returncode == 0
    assert result.stdout.strip().startswith(pinned_version())


def test_a_second_run_reuses_the_binary(helm: Path) -> None:
    before = helm.stat().st_mtime_ns
    again = subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60, check=False
    )
    assert again.returncode == 0, again.stderr
    assert Path(again.stdout.strip()) == helm
    assert "already installed" in again.stderr
    assert helm.stat().st_mtime_ns == before


def test_helm_assumes_a_kubernetes_the_chart_supports(helm: Path) -> None:
    """A `go install` build without the release's link flags claims Kubernetes 1.20, and
    `helm template` would refuse the chart's kubeVersion; the installer sets them."""
    # The defaults plus the keys production demands (tests/deploy/conftest.py: DEFAULTS).
    chart = ("template", "r", str(REPO / "helm" / "mpp"), "-f", str(CI_VALUES / DEFAULTS))
    shown = run_helm(helm, *chart)
    assert shown.returncode == 0, shown.stderr
    older = run_helm(helm, *chart, "--kube-version", "1.20.0")
    assert older.returncode != 0
    assert "kubeVersion" in older.stderr
