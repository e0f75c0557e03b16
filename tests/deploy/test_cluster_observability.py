"""Jaeger and Prometheus for the local cluster (lib/mpp/stack/cluster_observability*.py), checked
offline: the objects `mpp deploy observability up` applies (restricted pods, nothing pulled,
a Role limited to the namespace), their configurations passed through promtool and
`jaeger validate`, and the images' tags. tests/cluster/test_observability.py runs them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mpp.config import Settings
from mpp.stack import cluster_observability_objects as objects
from mpp.stack.cluster_observability import image_ref
from mpp.stack.deploy import deep_merge, local_values
from mpp.stack.prometheus import ALERT_RULES
from mpp.stack.services import SERVICES
from tests.deploy.conftest import Rendered, template
from tests.deploy.manifests import container, deployment, egress_to, otel_env
from tests.observability import built_binary

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "mpp-obs-test"
JAEGER_IMAGE = "localhost/mpp/jaeger:v1.75.0-0123456789ab"
PROMETHEUS_IMAGE = "localhost/mpp/prometheus:v0.316.0-ba9876543210"


@pytest.fixture(scope="module")
def applied() -> list[dict[str, Any]]:
    return objects.manifests(NAMESPACE, JAEGER_IMAGE, PROMETHEUS_IMAGE)


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_every_object_is_labelled_for_down(applied: list[dict[str, Any]]) -> None:
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in applied)
    assert kinds == sorted(
        [(k, objects.JAEGER) for k in ("ConfigMap", "Deployment", "Service")]
        + [
            (k, objects.PROMETHEUS)
            for k in ("ConfigMap", "Deployment", "Service", "ServiceAccount", "Role", "RoleBinding")
        ]
    )
    for doc in applied:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == objects.PART_OF
        assert "namespace" not in doc["metadata"]  # applied into the namespace given


def test_every_pod_is_restricted_and_pulls_nothing(applied: list[dict[str, Any]]) -> None:
    workloads = of_kind(applied, "Deployment")
    images = {objects.JAEGER: JAEGER_IMAGE, objects.PROMETHEUS: PROMETHEUS_IMAGE}
    for name, workload in workloads.items():
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == objects.NOBODY
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        (c,) = pod["containers"]
        assert c["image"] == images[name]
        assert c["imagePullPolicy"] == "Never"
        security = c["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        for mount in c["volumeMounts"]:
            volume = volumes[mount["name"]]
            # The configuration is read-only; everything it may write is an emptyDir.
            if "configMap" in volume:
                assert mount["readOnly"] is True
                assert volume["configMap"]["name"] == name
            else:
                assert volume == {"name": mount["name"], "emptyDir": {}}, name
        assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}
        ports = {p["name"] for p in c["ports"]}
        for probe in ("readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"]["port"] in ports
        service = of_kind(applied, "Service")[name]
        assert (
            service["spec"]["selector"].items()
            <= workload["spec"]["template"]["metadata"]["labels"].items()
        )
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    prometheus_pod = workloads[objects.PROMETHEUS]["spec"]["template"]["spec"]
    mounts = {m["mountPath"] for m in prometheus_pod["containers"][0]["volumeMounts"]}
    container = prometheus_pod["containers"][0]
    flag = "--storage.tsdb.path="
    (tsdb,) = [a.removeprefix(flag) for a in container["args"] if a.startswith(flag)]
    assert tsdb in mounts  # Prometheus writes on a volume, the root being read-only
    # The image holds nothing but its program, at /<name>: a volume mounted over that path
    # fails the container's start ("not a directory").
    for name in (objects.PROMETHEUS, objects.JAEGER):
        pod = workloads[name]["spec"]["template"]["spec"]
        program = "/" + name.removeprefix("mpp-")
        assert program not in {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}


def test_only_prometheus_calls_the_api_and_only_to_discover_its_namespace(
    applied: list[dict[str, Any]],
) -> None:
    assert not [d for d in applied if d["kind"].startswith("Cluster")]
    workloads = of_kind(applied, "Deployment")
    jaeger_pod = workloads[objects.JAEGER]["spec"]["template"]["spec"]
    assert jaeger_pod["automountServiceAccountToken"] is False
    prometheus_pod = workloads[objects.PROMETHEUS]["spec"]["template"]["spec"]
    assert prometheus_pod["serviceAccountName"] == objects.PROMETHEUS
    assert prometheus_pod["automountServiceAccountToken"] is True
    (role,) = of_kind(applied, "Role").values()
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["pods"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    (binding,) = of_kind(applied, "RoleBinding").values()
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": objects.PROMETHEUS, "namespace": NAMESPACE}
    ]


def test_the_services_ports(applied: list[dict[str, Any]]) -> None:
    services = of_kind(applied, "Service")
    ports = {
        name: {p["name"]: p["port"] for p in service["spec"]["ports"]}
        for name, service in services.items()
    }
    assert ports[objects.JAEGER] == {
        "otlp-grpc": 4317,
        "otlp-http": 4318,
        "query": 16686,
        "query-grpc": 16685,
    }
    assert ports[objects.PROMETHEUS] == {"http": 9090}


# --- Prometheus's configuration ------------------------------------------------------------


def prometheus_data(applied: list[dict[str, Any]]) -> dict[str, str]:
    data: dict[str, str] = of_kind(applied, "ConfigMap")[objects.PROMETHEUS]["data"]
    return data


def test_prometheus_loads_the_charts_alert_rules(applied: list[dict[str, Any]]) -> None:
    data = prometheus_data(applied)
    assert data[objects.RULES_FILE] == (REPO / ALERT_RULES).read_text()
    config = yaml.safe_load(data["prometheus.yml"])
    assert config["rule_files"] == [f"{objects.PROMETHEUS_CONFIG_DIR}/{objects.RULES_FILE}"]
    args = of_kind(applied, "Deployment")[objects.PROMETHEUS]["spec"]["template"]["spec"][
        "containers"
    ][0]["args"]
    assert f"--config.file={objects.PROMETHEUS_CONFIG_DIR}/prometheus.yml" in args


def test_prometheus_configuration_passes_promtool(tmp_path: Path) -> None:
    promtool = built_binary("promtool")
    # As in the pod, but the rule file where it is in this checkout.
    config = tmp_path / "prometheus.yml"
    config.write_text(objects.prometheus_config(NAMESPACE, ((REPO / ALERT_RULES).resolve(),)))
    checked = subprocess.run(
        [str(promtool), "check", "config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout + checked.stderr


def test_prometheus_discovers_the_charts_annotated_pods_in_its_namespace_only(
    applied: list[dict[str, Any]], default_render: Rendered
) -> None:
    """The annotations the scrape job reads are the ones the chart puts on every pod."""
    config = yaml.safe_load(prometheus_data(applied)["prometheus.yml"])
    (job,) = config["scrape_configs"]
    assert job["kubernetes_sd_configs"] == [{"role": "pod", "namespaces": {"names": [NAMESPACE]}}]
    read = {label for rule in job["relabel_configs"] for label in rule["source_labels"]}
    prefix = "__meta_kubernetes_pod_annotation_"
    for service in SERVICES:
        annotations = deployment(default_render, service)["spec"]["template"]["metadata"][
            "annotations"
        ]
        for key in ("prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path"):
            assert key in annotations, (service, key)
            # Prometheus's label for an annotation: every character outside [a-zA-Z0-9_] is _.
            assert prefix + key.replace(".", "_").replace("/", "_") in read
        assert annotations["prometheus.io/scrape"] == "true"
    keep = job["relabel_configs"][0]
    assert keep == {
        "source_labels": [f"{prefix}prometheus_io_scrape"],
        "regex": "true",
        "action": "keep",
    }
    targets = {rule.get("target_label") for rule in job["relabel_configs"]}
    assert {"__address__", "__metrics_path__", "namespace", "pod", "component"} <= targets


def test_a_changed_configuration_rolls_the_pod() -> None:
    def checksum(namespace: str) -> str:
        docs = objects.manifests(namespace, JAEGER_IMAGE, PROMETHEUS_IMAGE)
        pod = of_kind(docs, "Deployment")[objects.PROMETHEUS]["spec"]["template"]
        return str(pod["metadata"]["annotations"]["checksum/config"])

    assert checksum("a") != checksum("b")  # the namespace is in prometheus.yml


# --- Jaeger's configuration ------------------------------------------------------------------


def test_jaeger_configuration_is_valid_and_listens_on_the_pods_ports(
    applied: list[dict[str, Any]], tmp_path: Path
) -> None:
    jaeger = built_binary("jaeger")
    text = of_kind(applied, "ConfigMap")[objects.JAEGER]["data"]["config.yaml"]
    config = tmp_path / "config.yaml"
    config.write_text(text)
    checked = subprocess.run(
        [str(jaeger), "validate", "--config", f"file:{config}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    parsed = yaml.safe_load(text)
    protocols = parsed["receivers"]["otlp"]["protocols"]
    query = parsed["extensions"]["jaeger_query"]
    assert protocols["grpc"]["endpoint"] == f"0.0.0.0:{objects.OTLP_GRPC_PORT}"
    assert protocols["http"]["endpoint"] == f"0.0.0.0:{objects.OTLP_HTTP_PORT}"
    assert query["http"]["endpoint"] == f"0.0.0.0:{objects.QUERY_PORT}"
    args = of_kind(applied, "Deployment")[objects.JAEGER]["spec"]["template"]["spec"]["containers"][
        0
    ]["args"]
    assert args == ["--config", f"file:{objects.JAEGER_CONFIG_DIR}/config.yaml"]


# --- the release's values ------------------------------------------------------------------


def test_the_local_clusters_tracing_values_point_at_its_jaeger(helm: Path, tmp_path: Path) -> None:
    """`mpp deploy up --tracing`'s values (the local cluster's, with tracing_values over them)
    render: the endpoint is the namespace's Jaeger Service, the egress rule its pods."""
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    local = local_values(settings, "t1", "the-local-key", "10.244.0.1", 19094)
    path = tmp_path / "values.json"
    path.write_text(json.dumps(deep_merge(local, objects.tracing_values())))
    rendered = template(helm, str(path))
    env = otel_env(container(deployment(rendered, "analytics")))
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://{objects.JAEGER}:{objects.OTLP_GRPC_PORT}"
    assert env["OTEL_EXPORTER_OTLP_INSECURE"] == "true"
    (rule,) = egress_to(rendered, "analytics", objects.OTLP_GRPC_PORT)
    assert rule["to"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": objects.JAEGER}}}
    ]


# --- the images --------------------------------------------------------------------------------


def test_an_images_tag_is_the_binarys_version_and_hash(tmp_path: Path) -> None:
    def ref_of(content: bytes, folder: str = "jaeger-v1.75.0") -> str:
        binary = tmp_path / folder / "bin" / "jaeger"
        binary.parent.mkdir(parents=True, exist_ok=True)
        binary.write_bytes(content)
        return image_ref("jaeger", binary)

    first = ref_of(b"one build")
    assert first.startswith("localhost/mpp/jaeger:v1.75.0-")
    assert ref_of(b"one build") == first  # the same binary: the same image, no new import
    assert ref_of(b"another build") != first
    # A binary from elsewhere is tagged by its hash alone.
    assert ref_of(b"one build", "elsewhere") == "localhost/mpp/jaeger:" + first.rsplit("-")[-1]
