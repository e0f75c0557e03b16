"""The local Prometheus's configuration as mpp.stack renders it, checked by promtool (the
binary built by scripts/install_observability.sh; no server needed)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mpp.config import Settings
from mpp.stack.prometheus import PrometheusServer, render_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def promtool() -> Path:
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "install_observability.sh"), "--installed", "promtool"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(
            "promtool is not built (make test builds it; or bash "
            "scripts/install_observability.sh promtool)"
        )
    return Path(result.stdout.strip())


def check(promtool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool), "check", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_rendered_configuration_passes_promtool(promtool: Path, tmp_path: Path) -> None:
    server = PrometheusServer(Settings(), tmp_path / ".stack", REPO)
    config = tmp_path / "prometheus.yml"
    # With the chart's alert rules when they exist, as `stack up` renders it.
    config.write_text(render_config(tmp_path / "targets", server.rule_files()))
    result = check(promtool, "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_refuses_a_broken_rules_file_in_the_configuration(
    promtool: Path, tmp_path: Path
) -> None:
    rules = tmp_path / "alerts.yaml"
    rules.write_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: sum(\n")
    config = tmp_path / "prometheus.yml"
    config.write_text(render_config(tmp_path / "targets", [rules]))
    result = check(promtool, "config", str(config))
    assert result.returncode != 0
    assert "alerts.yaml" in result.stdout + result.stderr
