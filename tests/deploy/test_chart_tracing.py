"""The chart's ``tracing`` values: off by default; on, the standard OTEL_* variables in every
service's container (what lib/mpp/tracing.py and the OpenTelemetry SDK read, checked by
reading them back through both) and an egress rule to the collector; plaintext only when
``insecure: true`` allows it. Rendered offline by the pinned helm."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from mpp.stack.services import SERVICES
from tests.deploy.conftest import CHART, DEFAULTS, Rendered, template, template_result
from tests.deploy.manifests import (
    all_containers,
    container,
    deployment,
    egress_to,
    otel_env,
    workloads,
)

pytestmark = pytest.mark.timeout(1800)  # the first run builds helm (see conftest)

COLLECTOR = "https://otel-collector.observability:4317"


@pytest.fixture
def no_otel_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A monkeypatch, this process's own OTEL_* variables removed."""
    import os

    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_tracing_is_off_by_default(default_render: Rendered) -> None:
    for workload in workloads(default_render):
        for c in all_containers(workload):
            assert otel_env(c) == {}, (workload["metadata"]["name"], c["name"])
    for component in (*SERVICES, "migrations"):
        assert egress_to(default_render, component, 4317) == [], component


def test_tracing_on_gives_every_service_the_otel_variables(
    render: Callable[..., Rendered], no_otel_env: pytest.MonkeyPatch
) -> None:
    from opentelemetry.sdk.trace.sampling import _get_from_env_or_default

    from mpp import tracing

    rendered = render(set_values=(f"tracing.otlpEndpoint={COLLECTOR}",))
    for service in SERVICES:
        env = otel_env(container(deployment(rendered, service)))
        assert env == {
            "OTEL_EXPORTER_OTLP_ENDPOINT": COLLECTOR,
            "OTEL_EXPORTER_OTLP_INSECURE": "false",
            "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        }, service
        # Read back the way a service does: tracing on, the SDK's sampler the one asked for.
        with no_otel_env.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            assert tracing.tracing_requested(), service
            sampler = _get_from_env_or_default().get_description()
            assert sampler.startswith("ParentBased{root:AlwaysOnSampler,"), sampler
    # The migration Job (and the test pod) trace nothing.
    for job in rendered.of_kind("Job"):
        for c in all_containers(job):
            assert otel_env(c) == {}, job["metadata"]["name"]
    for pod in rendered.of_kind("Pod"):
        assert all(otel_env(c) == {} for c in pod["spec"]["containers"])


def test_the_sampler_and_its_argument_are_passed_as_given(
    render: Callable[..., Rendered], no_otel_env: pytest.MonkeyPatch
) -> None:
    from opentelemetry.sdk.trace.sampling import _get_from_env_or_default

    rendered = render(
        set_values=(
            f"tracing.otlpEndpoint={COLLECTOR}",
            "tracing.sampler=parentbased_traceidratio",
            "tracing.samplerArg=0.25",
        )
    )
    env = otel_env(container(deployment(rendered, "ingest")))
    assert env["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    assert env["OTEL_TRACES_SAMPLER_ARG"] == "0.25"
    for name, value in env.items():
        no_otel_env.setenv(name, value)
    assert "TraceIdRatioBased{0.25}" in _get_from_env_or_default().get_description()


def test_each_service_may_reach_the_collector_and_the_migrations_may_not(
    helm: Path, tmp_path: Path
) -> None:
    peers = [{"namespaceSelector": {"matchLabels": {"name": "observability"}}}]
    values = {
        "tracing": {"otlpEndpoint": COLLECTOR},
        "networkPolicy": {"tracing": {"peers": peers, "ports": [4317, 4318]}},
    }
    path = tmp_path / "tracing.json"
    path.write_text(json.dumps(values))
    rendered = template(helm, DEFAULTS, str(path))
    for service in SERVICES:
        (rule,) = egress_to(rendered, service, 4317)
        assert rule["ports"] == [
            {"port": 4317, "protocol": "TCP"},
            {"port": 4318, "protocol": "TCP"},
        ]
        assert rule["to"] == peers, service
    assert egress_to(rendered, "migrations", 4317) == []
    # No peers: the port is open to any address, as for the stores.
    anywhere = template(helm, DEFAULTS, set_values=(f"tracing.otlpEndpoint={COLLECTOR}",))
    (rule,) = egress_to(anywhere, "ingest", 4317)
    assert "to" not in rule


def test_a_plaintext_collector_needs_insecure(helm: Path) -> None:
    plaintext = ("tracing.otlpEndpoint=http://jaeger:4317", "tracing.insecure=true")
    refused = template_result(helm, DEFAULTS, set_values=plaintext)
    assert refused.returncode != 0
    assert "insecure is false" in refused.stderr
    assert "tracing.insecure=true: spans would reach http://jaeger:4317 unencrypted" in (
        refused.stderr
    )
    allowed = template_result(helm, "insecure-values.yaml", set_values=plaintext)
    assert allowed.returncode == 0, allowed.stderr


def test_an_http_endpoint_without_tracing_insecure_is_refused(helm: Path) -> None:
    """The exporter would speak TLS to it (OTEL_EXPORTER_OTLP_INSECURE=false wins over the
    scheme): a collector that never answers. Refused even where plaintext is allowed."""
    refused = template_result(
        helm, "insecure-values.yaml", set_values=("tracing.otlpEndpoint=http://jaeger:4317",)
    )
    assert refused.returncode != 0
    assert "tracing.otlpEndpoint=http://jaeger:4317 is http:// but tracing.insecure is false" in (
        refused.stderr
    )


@pytest.mark.parametrize(
    ("assignment", "named"),
    [
        ("tracing.otlpEndpoint=jaeger:4317", "otlpEndpoint"),
        ("tracing.sampler=always", "sampler"),
        ("tracing.insecure=yes", "insecure"),
        ("tracing.endpoint=https://jaeger:4317", "endpoint"),
    ],
)
def test_schema_refuses_a_wrong_tracing_value(helm: Path, assignment: str, named: str) -> None:
    refused = template_result(helm, DEFAULTS, set_values=(assignment,))
    assert refused.returncode != 0
    assert "values don't meet the specifications of the schema" in refused.stderr
    assert named in refused.stderr


def test_schema_samplers_are_the_sdks() -> None:
    from opentelemetry.sdk.trace import sampling

    schema = json.loads((CHART / "values.schema.json").read_text())
    allowed = schema["properties"]["tracing"]["properties"]["sampler"]["enum"]
    assert set(allowed) == set(sampling._KNOWN_SAMPLERS)
