"""Fixtures for the deployment tests: the pinned helm (installed once, outside the clone, by
scripts/install_helm.sh) and the chart rendered with each of its test value sets.

No server and no cluster is needed: `helm lint` and `helm template` run offline.
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "mpp"
CI_VALUES = CHART / "ci"
RELEASE = "rel"
FULLNAME = f"{RELEASE}-mpp"
# Building helm from source takes about 150 s on two cores, the first time only.
INSTALL_TIMEOUT_S = 1800


@pytest.fixture(scope="session")
def helm() -> Path:
    """The pinned helm binary; built by scripts/install_helm.sh on a machine without it."""
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "install_helm.sh")],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"scripts/install_helm.sh failed:\n{result.stderr[-3000:]}")
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path.is_file(), f"install_helm.sh printed {path}, which is not a file"
    return path


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=120, check=False
    )


@dataclass
class Rendered:
    """The objects `helm template` produced, with lookups by kind and name."""

    docs: list[dict[str, Any]]
    values_files: tuple[str, ...] = field(default=())

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
        return found[0]

    def find(self, kind: str, name: str) -> dict[str, Any] | None:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        return found[0] if found else None

    def configmap_data(self, name: str = f"{FULLNAME}-config") -> dict[str, str]:
        data: dict[str, str] = self.get("ConfigMap", name).get("data") or {}
        return data

    def secret_data(self, name: str = f"{FULLNAME}-secrets") -> dict[str, str]:
        raw = self.get("Secret", name).get("data") or {}
        return {key: base64.b64decode(value).decode() for key, value in raw.items()}

    def keys_data(self) -> dict[str, str]:
        """The keys Secret (the ids HMAC key, the API keys)."""
        return self.secret_data(f"{FULLNAME}-keys")


# The Prometheus Operator's CRD, as a cluster that has it reports it (the chart renders a
# ServiceMonitor only there).
SERVICE_MONITOR_API = "monitoring.coreos.com/v1/ServiceMonitor"


# The chart's defaults render only with what production demands (helm/mpp/ci/keys-values.yaml):
# the tests' "defaults" are those plus that file.
DEFAULTS = "keys-values.yaml"


def template_result(
    helm: Path,
    *values_files: str,
    set_values: tuple[str, ...] = (),
    api_versions: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """`helm template` of the chart with files of helm/mpp/ci (or absolute paths) and --set."""
    args = ["template", RELEASE, str(CHART), "--namespace", "mpp"]
    for api in api_versions:
        args += ["--api-versions", api]
    for name in values_files:
        args += ["-f", str(CI_VALUES / name)]
    for assignment in set_values:
        args += ["--set", assignment]
    return run_helm(helm, *args)


def template(
    helm: Path,
    *values_files: str,
    set_values: tuple[str, ...] = (),
    api_versions: tuple[str, ...] = (),
) -> Rendered:
    result = template_result(helm, *values_files, set_values=set_values, api_versions=api_versions)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    return Rendered(docs, values_files)


@pytest.fixture(scope="session")
def render(helm: Path) -> Callable[..., Rendered]:
    """The chart rendered with the defaults (DEFAULTS), then ``files`` and ``set_values``."""
    return lambda *files, set_values=(): template(helm, DEFAULTS, *files, set_values=set_values)


@pytest.fixture(scope="session")
def default_render(helm: Path) -> Rendered:
    return template(helm, DEFAULTS)


@pytest.fixture(scope="session")
def insecure_render(helm: Path) -> Rendered:
    return template(helm, "insecure-values.yaml")


@pytest.fixture(scope="session")
def options_render(helm: Path) -> Rendered:
    return template(helm, "options-values.yaml", api_versions=(SERVICE_MONITOR_API,))


@pytest.fixture(scope="session")
def secrets_render(helm: Path) -> Rendered:
    return template(helm, "secrets-values.yaml")


@pytest.fixture(scope="session")
def chart_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return values


@pytest.fixture(scope="session")
def dockerfile_user() -> int:
    """The numeric uid the image runs as (its USER instruction)."""
    from tests.deploy.dockerfile import instructions

    users = [i.arguments for i in instructions() if i.keyword == "USER"]
    assert users, "the Dockerfile sets no USER: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), f"USER {uid}: use a numeric uid so that runAsNonRoot can check it"
    return int(uid)


@pytest.fixture
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """A monkeypatch for building Settings from rendered variables alone."""
    import os

    for name in list(os.environ):
        if name.startswith(("MPP_", "mpp_")):
            monkeypatch.delenv(name)
    yield monkeypatch
