"""The Helm chart (helm/mpp), linted and rendered offline with the pinned helm: lint in strict
mode, the values schema, and what the templates make of the values (a value they read, an
override, a change that rolls the pods).

The schema's choices are checked against lib/mpp/config/ and the values' services against
lib/mpp/stack/services.py: nothing here is a copy of those names. The workloads are checked in
test_chart_workloads.py, the settings they receive in test_chart_settings.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mpp.stack.services import SERVICES
from tests.deploy.conftest import CHART, CI_VALUES, DEFAULTS, Rendered, run_helm
from tests.deploy.manifests import TEMPLATE, VALUE_SETS, deployment
from tests.deploy.settings_names import literal_values

pytestmark = pytest.mark.timeout(1800)  # the first run builds helm (see conftest)


# --- lint and schema ---------------------------------------------------------------------


@pytest.mark.parametrize("files", VALUE_SETS, ids=lambda f: f[0] if f else "defaults")
def test_lint_is_clean_in_strict_mode(helm: Path, files: tuple[str, ...]) -> None:
    args = ["lint", "--strict", str(CHART)]
    for name in (DEFAULTS, *files):
        args += ["-f", str(CI_VALUES / name)]
    result = run_helm(helm, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


def test_schema_rejects_a_wrong_value_at_render_time(helm: Path) -> None:
    result = run_helm(helm, *TEMPLATE, "--set", "kafka.securityProtocol=PLAINTEXTT")
    assert result.returncode != 0
    assert "securityProtocol" in result.stderr

    misspelt = run_helm(helm, *TEMPLATE, "--set", "services.ingest.replica=3")
    assert misspelt.returncode != 0
    assert "replica" in misspelt.stderr


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ("services:\n  ingest:\n    replicas: two\n", "replicas"),
        ("storeEndpoints:\n  enabled: true\n  adresses: [10.0.0.1]\n  ports: {}\n", "adresses"),
        ("networkPolicy:\n  stores:\n    kafka: {peers: [], ports: [0]}\n", "ports"),
        ("services:\n  embedder:\n    image: {digest: latest}\n", "digest"),
    ],
)
def test_a_values_file_with_a_wrong_type_or_key_fails_naming_it(
    helm: Path, tmp_path: Path, values: str, named: str
) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(values)
    result = run_helm(helm, *TEMPLATE, "-f", str(path))
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert named in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("schema_path", "setting"),
    [
        (("config", "environment"), ("environment",)),
        (("config", "logLevel"), ("log_level",)),
        (("config", "logFormat"), ("log_format",)),
        (("kafka", "securityProtocol"), ("kafka", "security_protocol")),
        (("kafka", "saslMechanism"), ("kafka", "sasl_mechanism")),
        (("postgres", "sslmode"), ("postgres", "sslmode")),
        (("milvus", "indexType"), ("milvus", "index_type")),
        (("warehouse", "backend"), ("warehouse", "backend")),
    ],
)
def test_schema_choices_are_the_settings_choices(
    schema_path: tuple[str, ...], setting: tuple[str, ...]
) -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    node = schema
    for key in schema_path:
        node = node["properties"][key]
    allowed = {v for v in node["enum"] if v != ""}  # "" stands for "not set"
    assert allowed == literal_values(*setting)


def test_values_list_exactly_the_platforms_services(chart_values: dict[str, Any]) -> None:
    assert set(chart_values["services"]) == set(SERVICES)
    for name, (_module, port) in SERVICES.items():
        assert chart_values["services"][name]["ports"]["http"] == port, name


# --- templates -------------------------------------------------------------------------------


def test_config_changes_roll_the_pods(render: Callable[..., Rendered]) -> None:
    def checksum(rendered: Rendered) -> str:
        pod = deployment(rendered, "ingest")["spec"]["template"]
        return str(pod["metadata"]["annotations"]["checksum/config"])

    before = checksum(render())
    after = checksum(render(set_values=("kafka.bootstrapServers=other:9092",)))
    assert before != after


def test_no_template_reads_a_value_that_values_yaml_lacks(
    chart_values: dict[str, Any],
) -> None:
    """`.Values.a.b` paths in the templates exist in values.yaml (a typo renders as empty)."""
    import re

    known: set[str] = set()

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                path = f"{prefix}.{key}" if prefix else key
                known.add(path)
                walk(value, path)

    walk(chart_values, "")
    used = set()
    for template in (CHART / "templates").rglob("*"):
        if template.is_file():
            used |= set(re.findall(r"\.Values\.([A-Za-z0-9_.]+)", template.read_text()))
    assert used, "no .Values reference found"
    missing = sorted(u.rstrip(".") for u in used if u.rstrip(".") not in known)
    assert not missing, missing


def test_extra_env_overrides_a_setting_without_a_duplicate_key(helm: Path) -> None:
    """PyYAML keeps the last of two equal keys; the API server refuses them: count the text."""
    result = run_helm(
        helm,
        *TEMPLATE,
        "--show-only",
        "templates/configmap.yaml",
        "--set",
        "config.extraEnv.MPP_LOG_LEVEL=DEBUG",
    )
    assert result.returncode == 0, result.stderr
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert [line for line in lines if line.startswith("MPP_LOG_LEVEL:")] == [
        'MPP_LOG_LEVEL: "DEBUG"'
    ]
