"""The alert rules (helm/mpp/files/alerts.yaml) checked and unit-tested by promtool, and
shipped by the chart only where they can be.

promtool comes from scripts/install_observability.sh (built from the Go module proxy once, into
~/.cache/mpp/observability; a minute once Prometheus is built, about 13 cold). Its absence is a
failure, not a skip: the rules are part of the product.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import DEFAULTS, FULLNAME, Rendered, template, template_result
from tests.observability import built_binary
from tests.promql import ALERTS, DASHBOARD, alert_rules, base_name, metric_names

pytestmark = pytest.mark.timeout(1800)  # a cold build of promtool

REPO = Path(__file__).resolve().parents[2]
ALERT_TESTS = Path(__file__).with_name("alerts_test.yaml")
PROMETHEUS_RULE_API = "monitoring.coreos.com/v1/PrometheusRule"


@pytest.fixture(scope="session")
def promtool() -> Path:
    return built_binary("promtool")


def run(promtool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool), *args], capture_output=True, text=True, timeout=120, cwd=REPO
    )


def test_promtool_checks_the_rules(promtool: Path) -> None:
    result = run(promtool, "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout + result.stderr


def test_promtool_runs_the_alert_tests(promtool: Path) -> None:
    result = run(promtool, "test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_fails_a_rule_that_does_not_fire_as_expected(
    promtool: Path, tmp_path: Path
) -> None:
    """The tests can fail: with a threshold raised tenfold, the lag case no longer fires."""
    rules = ALERTS.read_text().replace("(mpp_consumer_lag_records) > 10000", "(...) > 100000")
    rules = rules.replace("(...)", "(mpp_consumer_lag_records)")
    assert rules != ALERTS.read_text()
    (tmp_path / "alerts.yaml").write_text(rules)
    cases = yaml.safe_load(ALERT_TESTS.read_text())
    cases["rule_files"] = ["alerts.yaml"]
    (tmp_path / "alerts_test.yaml").write_text(yaml.safe_dump(cases))
    result = run(promtool, "test", "rules", str(tmp_path / "alerts_test.yaml"))
    assert result.returncode != 0
    assert "MppConsumerLagHigh" in result.stdout + result.stderr


def _cases() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(test group, alert case) of every alert case in the test file."""
    groups = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    return [(group, case) for group in groups for case in group.get("alert_rule_test", [])]


def test_every_alert_has_a_case_that_fires_and_one_that_stays_quiet() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    fires: dict[str, int] = {}
    quiet: dict[str, int] = {}
    for group, case in _cases():
        name = case["alertname"]
        assert name in rules, f"{group['name']}: no alert {name}"
        if case.get("exp_alerts"):
            fires[name] = fires.get(name, 0) + 1
            continue
        quiet[name] = quiet.get(name, 0) + 1
        # Quiet because of the values, not for want of the series the rule reads.
        given = {base_name(s["series"].split("{")[0]) for s in group["input_series"]}
        read = {base_name(n) for n in metric_names(rules[name]["expr"])}
        assert read <= given, f"{group['name']}: no input for {sorted(read - given)}"
    assert set(fires) == set(rules), f"no firing case: {sorted(set(rules) - set(fires))}"
    assert set(quiet) == set(rules), f"no quiet case: {sorted(set(rules) - set(quiet))}"


def test_every_alert_has_a_severity_a_for_and_its_runbook_section() -> None:
    runbook = (REPO / "docs" / "runbook.md").read_text()
    for rule in alert_rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule.get("for"), f"{name} fires on one evaluation"
        assert rule["annotations"]["runbook_url"] == f"docs/runbook.md#{name.lower()}"
        # The anchor GitHub makes of the section's title "## MppConsumerLagHigh".
        assert f"\n## {name}\n" in runbook, f"docs/runbook.md has no section {name}"


# --- the chart ---------------------------------------------------------------------------


def _monitoring_objects(rendered: Rendered) -> list[dict[str, Any]]:
    dashboards = [
        d
        for d in rendered.of_kind("ConfigMap")
        if d["metadata"].get("labels", {}).get("grafana_dashboard")
    ]
    return rendered.of_kind("PrometheusRule") + dashboards


def test_the_default_install_renders_no_monitoring_object(
    default_render: Rendered, helm: Path
) -> None:
    """The local test cluster has no Prometheus Operator: an object of its CRD would be
    refused there. Nor is the dashboard on by default."""
    assert _monitoring_objects(default_render) == []
    never = template(
        helm,
        DEFAULTS,
        set_values=("monitoring.prometheusRule=never",),
        api_versions=(PROMETHEUS_RULE_API,),
    )
    assert never.of_kind("PrometheusRule") == []


@pytest.mark.parametrize(
    ("mode", "api_versions"),
    [("auto", (PROMETHEUS_RULE_API,)), ("always", ())],
)
def test_the_prometheus_rule_carries_the_rule_file(
    helm: Path, mode: str, api_versions: tuple[str, ...]
) -> None:
    rendered = template(
        helm,
        DEFAULTS,
        set_values=(
            f"monitoring.prometheusRule={mode}",
            "monitoring.prometheusRuleLabels.release=kube-prometheus-stack",
        ),
        api_versions=api_versions,
    )
    rule = rendered.get("PrometheusRule", FULLNAME)
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text())


def test_the_runbook_url_can_point_at_the_published_runbook(helm: Path) -> None:
    base = "https://docs.example.org/mpp/runbook.html"
    rendered = template(
        helm,
        DEFAULTS,
        set_values=("monitoring.prometheusRule=always", f"monitoring.runbookUrl={base}"),
    )
    urls = [
        rule["annotations"]["runbook_url"]
        for group in rendered.get("PrometheusRule", FULLNAME)["spec"]["groups"]
        for rule in group["rules"]
    ]
    assert urls == [f"{base}#{rule['alert'].lower()}" for rule in alert_rules()]


def test_the_dashboard_is_a_configmap_for_grafanas_sidecar(
    render: Callable[..., Rendered],
) -> None:
    rendered = render(set_values=("monitoring.grafanaDashboard.enabled=true",))
    (configmap,) = _monitoring_objects(rendered)
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["mpp.json"]) == json.loads(DASHBOARD.read_text())


def test_a_wrong_mode_is_refused(helm: Path) -> None:
    result = template_result(helm, DEFAULTS, set_values=("monitoring.prometheusRule=yes",))
    assert result.returncode != 0
    assert "monitoring" in result.stderr and "prometheusRule" in result.stderr
