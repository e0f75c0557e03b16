"""Reading the chart's rendered objects, for the tests of tests/deploy: its workloads and
their containers, and what a container's process sees (its environment, the Settings built
from it), plus the value sets and the `helm template` command the tests render with."""

from __future__ import annotations

from typing import Any

import pytest

from mpp.config import Settings
from tests.deploy.conftest import CHART, CI_VALUES, DEFAULTS, FULLNAME, Rendered

VALUE_SETS = [(), ("options-values.yaml",), ("secrets-values.yaml",), ("insecure-values.yaml",)]
# The Secrets options-values.yaml names, made outside the chart (empty: the keys are absent).
OPTIONS_EXISTING: dict[str, dict[str, str]] = {"mpp-credentials": {}, "mpp-keys": {}}
# `helm template` of the chart with the defaults that render (keys-values.yaml).
TEMPLATE = ("template", "r", str(CHART), "-f", str(CI_VALUES / DEFAULTS))


def deployment(rendered: Rendered, service: str) -> dict[str, Any]:
    return rendered.get("Deployment", f"{FULLNAME}-{service}")


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, [c["name"] for c in containers]
    return dict(containers[0])


def all_containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def workloads(rendered: Rendered) -> list[dict[str, Any]]:
    return rendered.of_kind("Deployment") + rendered.of_kind("Job")


def env_of(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}


def pod_environment(
    rendered: Rendered,
    workload: dict[str, Any],
    c: dict[str, Any],
    existing: dict[str, dict[str, str]],
) -> dict[str, str]:
    """What the container's process sees: envFrom (ConfigMap, then Secret), then env, whose
    secretKeyRef entries read the rendered Secrets or ``existing`` (name -> data: Secrets
    made outside the chart); an optional key that is absent sets nothing."""

    def secret(name: str) -> dict[str, str]:
        if rendered.find("Secret", name) is not None:
            return rendered.secret_data(name)
        assert name in existing, f"{name} is neither rendered nor given"
        return existing[name]

    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        if "configMapRef" in source:
            env.update(rendered.configmap_data(source["configMapRef"]["name"]))
        elif "secretRef" in source:
            env.update(secret(source["secretRef"]["name"]))
    env.update(env_of(c))
    for entry in c.get("env", []):
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        if ref is None:
            continue
        data = secret(ref["name"])
        if ref["key"] in data:
            env[entry["name"]] = data[ref["key"]]
        else:
            assert ref.get("optional") is True, f"{ref} is missing and not optional"
    return env


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    with monkeypatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        return Settings(_env_file=None)  # type: ignore[call-arg]


def otel_env(c: dict[str, Any]) -> dict[str, str]:
    return {name: value for name, value in env_of(c).items() if name.startswith("OTEL_")}


def egress_to(rendered: Rendered, component: str, port: int) -> list[dict[str, Any]]:
    """The egress rules of a component's NetworkPolicy that open ``port``."""
    policy = rendered.get("NetworkPolicy", f"{FULLNAME}-{component}")
    return [
        rule
        for rule in policy["spec"]["egress"]
        if {"port": port, "protocol": "TCP"} in rule.get("ports", [])
    ]
