"""The local Prometheus's and Jaeger's configurations as mpp.stack renders them, checked by
promtool and by `jaeger validate` (the binaries built by scripts/install_observability.sh; no
server is started)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mpp.config import Settings
from mpp.stack import jaeger as jaeger_stack
from mpp.stack.prometheus import PrometheusServer, render_config
from tests.observability import built_binary

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def promtool() -> Path:
    return built_binary("promtool")


@pytest.fixture(scope="module")
def jaeger() -> Path:
    return built_binary("jaeger")


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


def validate(jaeger: Path, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(jaeger), "validate", "--config", f"file:{config}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_rendered_jaeger_configuration_is_valid(jaeger: Path, tmp_path: Path) -> None:
    config = tmp_path / "jaeger.yaml"
    config.write_text(jaeger_stack.render_config())
    result = validate(jaeger, config)
    assert result.returncode == 0, result.stdout + result.stderr
    # The check is real: a misspelt key is refused, by name.
    config.write_text(jaeger_stack.render_config().replace("enable_tracing", "enable_tracin"))
    refused = validate(jaeger, config)
    assert refused.returncode != 0
    assert "enable_tracin" in refused.stdout + refused.stderr
