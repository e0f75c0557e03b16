"""The settings the chart hands the services, rendered offline with the pinned helm and read
back through lib/mpp/config/: every variable it sets is a setting, the services start with
exactly what is rendered, and the options (an existing Secret, mounted files, a disabled
service, autoscaling, a ServiceMonitor, the replicas the partitions allow).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mpp.stack.services import SERVICES
from tests.deploy.conftest import FULLNAME, Rendered, run_helm
from tests.deploy.manifests import (
    OPTIONS_EXISTING,
    TEMPLATE,
    VALUE_SETS,
    all_containers,
    container,
    deployment,
    env_of,
    pod_environment,
    settings_from,
    workloads,
)
from tests.deploy.settings_names import is_path_setting, setting_field

pytestmark = pytest.mark.timeout(1800)  # the first run builds helm (see conftest)


# --- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize("files", VALUE_SETS, ids=lambda f: f[0] if f else "defaults")
def test_every_variable_the_chart_sets_is_a_setting(
    render: Callable[..., Rendered], files: tuple[str, ...]
) -> None:
    rendered = render(*files)
    names: set[str] = set()
    for cm in rendered.of_kind("ConfigMap"):
        keys = set(cm.get("data") or {})
        assert all(k.startswith("MPP_") for k in keys), keys
        names |= keys
    for secret in rendered.of_kind("Secret"):
        names |= set(secret.get("data") or {})
    for workload in workloads(rendered):
        for c in all_containers(workload):
            names |= {n for n in env_of(c) if n.startswith("MPP_")}
    assert len(names) > 30  # the ConfigMap was rendered at all
    unknown = sorted(n for n in names if setting_field(n) is None)
    assert not unknown, f"not settings of mpp.config.Settings: {unknown}"


def test_the_services_start_with_exactly_what_is_rendered(
    secrets_render: Rendered, clean_environ: pytest.MonkeyPatch
) -> None:
    """Settings built from each container's rendered environment: production's own checks
    pass, and the values arrive intact (quoting, JSON lists, numbers)."""
    for service, (_module, port) in SERVICES.items():
        workload = deployment(secrets_render, service)
        env = pod_environment(secrets_render, workload, container(workload), {})
        settings = settings_from(env, clean_environ)
        assert settings.environment == "production"
        assert settings.http.port == port
        assert settings.postgres.password is not None
        assert settings.postgres.password.get_secret_value() == "pg'pass"
        assert settings.neo4j.auth() == ("neo4j", "n3o-pass word")
        assert settings.ids.hmac_key.get_secret_value() == "ids-hmac-key: 32 bytes, not 'real'"
        assert [k.get_secret_value() for k in settings.ids.previous_hmac_keys] == [
            "the ids key before the rotation"
        ]
        if service in ("recommender", "analytics"):
            assert [(k.name, k.scopes, k.rate_per_s) for k in settings.auth.keys] == [
                ("reader", ["recommendations:read", "feedback:write"], 50.0),
                ("ops", ["admin"], 100.0),
            ]
        else:  # the API keys go only to the doors that check them
            assert "MPP_AUTH__KEYS" not in env, service
        assert settings.kafka.topics.partitions == 12
        assert settings.kafka.retention_ms == 86_400_000
        assert settings.stack.dir == Path("/var/lib/mpp")


def test_defaults_without_credentials_fail_the_way_notes_warn(
    default_render: Rendered, clean_environ: pytest.MonkeyPatch
) -> None:
    workload = deployment(default_render, "ingest")
    env = pod_environment(default_render, workload, container(workload), {})
    with pytest.raises(ValueError, match="MPP_POSTGRES__PASSWORD"):
        settings_from(env, clean_environ)


# --- options: existing Secret, HPA, a disabled service, ServiceMonitor, mounted files -------


def test_an_existing_secret_replaces_the_charts_own(options_render: Rendered) -> None:
    assert options_render.of_kind("Secret") == []
    refs = set()
    key_refs = set()
    for workload in workloads(options_render):
        for c in all_containers(workload):
            refs |= {s["secretRef"]["name"] for s in c["envFrom"] if "secretRef" in s}
            key_refs |= {
                e["valueFrom"]["secretKeyRef"]["name"]
                for e in c.get("env", [])
                if "secretKeyRef" in e.get("valueFrom", {})
            }
        annotations = workload["spec"]["template"]["metadata"].get("annotations") or {}
        assert "checksum/secret" not in annotations
        assert "checksum/keys" not in annotations
    assert refs == {"mpp-credentials"}
    assert key_refs == {"mpp-keys"}


def test_existing_secret_keys_are_the_ones_the_chart_would_write(
    options_render: Rendered, secrets_render: Rendered, clean_environ: pytest.MonkeyPatch
) -> None:
    """An existing Secret with the keys the chart itself writes satisfies every service."""
    credentials = {key: "s3cret" for key in secrets_render.secret_data()} | {
        "MPP_KAFKA__SASL_PASSWORD": "kafka-pass"
    }
    keys = secrets_render.keys_data()
    assert set(keys) == {"MPP_IDS__HMAC_KEY", "MPP_IDS__PREVIOUS_HMAC_KEYS", "MPP_AUTH__KEYS"}
    existing = {"mpp-credentials": credentials, "mpp-keys": keys}
    enabled = [s for s in SERVICES if s != "graph-writer"]
    for service in enabled:
        workload = deployment(options_render, service)
        settings = settings_from(
            pod_environment(options_render, workload, container(workload), existing),
            clean_environ,
        )
        assert settings.ids.hmac_key.get_secret_value() == keys["MPP_IDS__HMAC_KEY"]
        assert bool(settings.auth.keys) == (service in ("recommender", "analytics"))
        assert settings.kafka.client_config()["sasl.mechanism"] == "SCRAM-SHA-512"
        assert settings.kafka.client_config()["sasl.password"] == "kafka-pass"
        assert settings.embedder.project_to_dim == 1024
        assert settings.ingest.redact_pii is False
        assert settings.warehouse.backend == "bigquery"


def test_files_named_by_settings_are_mounted(options_render: Rendered) -> None:
    """Every file a Path setting names lies in a volume mounted from the right Secret."""
    expected_secret = {
        "MPP_KAFKA__SSL_CA_LOCATION": "kafka-ca",
        "MPP_NEO4J__CA_FILE": "neo4j-ca",
        "MPP_POSTGRES__SSLROOTCERT": "postgres-tls",
        "MPP_POSTGRES__SSLCERT": "postgres-tls",
        "MPP_POSTGRES__SSLKEY": "postgres-tls",
        "MPP_REDIS__SSL_CA_FILE": "redis-tls",
        "MPP_REDIS__SSL_CERT_FILE": "redis-tls",
        "MPP_REDIS__SSL_KEY_FILE": "redis-tls",
        "MPP_MILVUS__TLS_CA_FILE": "milvus-tls",
        "MPP_MILVUS__TLS_CERT_FILE": "milvus-tls",
        "MPP_MILVUS__TLS_KEY_FILE": "milvus-tls",
        "MPP_WAREHOUSE__BIGQUERY_CREDENTIALS_FILE": "bigquery-key",
        "MPP_GRPC__TLS_CERT_FILE": "recommender-grpc-tls",
        "MPP_GRPC__TLS_KEY_FILE": "recommender-grpc-tls",
    }
    seen = set()
    for workload in workloads(options_render):
        spec = workload["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        for c in all_containers(workload):
            env = pod_environment(options_render, workload, c, OPTIONS_EXISTING)
            for name, path in env.items():
                # sslrootcert is a file or "system" (libpq: the system's CAs).
                is_file = is_path_setting(name) or (
                    name == "MPP_POSTGRES__SSLROOTCERT" and path != "system"
                )
                if not is_file or name == "MPP_STACK__DIR":
                    continue
                mounts = [m for m in c["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
                assert mounts, f"{workload['metadata']['name']}: {name}={path} is not mounted"
                volume = volumes[mounts[0]["name"]]
                assert volume["secret"]["secretName"] == expected_secret[name]
                seen.add(name)
    assert seen == set(expected_secret)


def test_a_disabled_service_renders_nothing(options_render: Rendered) -> None:
    for doc in options_render.docs:
        labels = doc["metadata"].get("labels") or {}
        assert labels.get("app.kubernetes.io/component") != "graph-writer", doc["kind"]
        assert "graph-writer" not in doc["metadata"]["name"]
    enabled = {d["metadata"]["name"] for d in options_render.of_kind("Deployment")}
    assert enabled == {f"{FULLNAME}-{s}" for s in SERVICES if s != "graph-writer"}


def test_the_recommender_autoscales_when_asked(
    options_render: Rendered, default_render: Rendered
) -> None:
    assert default_render.of_kind("HorizontalPodAutoscaler") == []
    hpa = options_render.get("HorizontalPodAutoscaler", f"{FULLNAME}-recommender")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": f"{FULLNAME}-recommender",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    # The HPA owns the replica count: the Deployment must not fight it on every upgrade.
    assert "replicas" not in deployment(options_render, "recommender")["spec"]
    assert deployment(options_render, "embedder")["spec"]["replicas"] == 3


def test_service_monitor_scrapes_every_service(options_render: Rendered) -> None:
    monitor = options_render.get("ServiceMonitor", FULLNAME)
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["path"] == "/metrics"
    services = options_render.of_kind("Service")
    assert len(services) == len(SERVICES) - 1
    for svc in services:
        assert selector.items() <= svc["metadata"]["labels"].items()
        assert endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]}


def test_no_service_monitor_without_its_crd(render: Callable[..., Rendered]) -> None:
    """A cluster without the Prometheus Operator would refuse the object ("no matches for
    kind"); the pods keep their prometheus.io annotations instead."""
    rendered = render("options-values.yaml")
    assert rendered.of_kind("ServiceMonitor") == []
    assert rendered.of_kind("Deployment")


def test_worker_replicas_beyond_the_partitions_are_refused(helm: Path) -> None:
    too_many = run_helm(helm, *TEMPLATE, "--set", "services.ingest.replicas=13")
    assert too_many.returncode != 0
    assert "services.ingest.replicas=13 exceeds kafka.topics.partitions=12" in too_many.stderr
    hpa = run_helm(
        helm,
        *TEMPLATE,
        "--set",
        "services.recommender.autoscaling.enabled=true",
        "--set",
        "services.recommender.autoscaling.maxReplicas=20",
    )
    # The recommender's API scales past the partitions (its follower only shares them out).
    assert hpa.returncode == 0, hpa.stderr
    assert "maxReplicas: 20" in hpa.stdout
    raised = run_helm(
        helm,
        *TEMPLATE,
        "--set",
        "services.ingest.replicas=13",
        "--set",
        "kafka.topics.partitions=16",
    )
    assert raised.returncode == 0, raised.stderr
