"""The objects of Jaeger and Prometheus in a namespace of the local cluster (applied by
mpp.stack.cluster_observability), and the chart values that send a release's spans there.

Both pods run as user 65534 on a read-only root with every capability dropped (the
``restricted`` Pod Security Standard), from images that hold only their static program
(``imagePullPolicy: Never``), with emptyDir volumes for what they write and their
configuration in a ConfigMap of their name; a changed configuration rolls the pod.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpp.stack import jaeger, prometheus, repo_root

JAEGER = "mpp-jaeger"
PROMETHEUS = "mpp-prometheus"
PART_OF = "mpp-observability"  # the label of every object here (``down`` deletes by it)
OTLP_GRPC_PORT = 4317
OTLP_HTTP_PORT = 4318
QUERY_PORT = 16686
QUERY_GRPC_PORT = 16685
PROMETHEUS_PORT = 9090
NOBODY = 65534
# Every pod of a release scraped (and every rule evaluated) this often: fresh enough for a
# test to read a counter soon after the events, light for a two-core node.
SCRAPE_INTERVAL = "5s"
JAEGER_CONFIG_DIR = "/etc/jaeger"
PROMETHEUS_CONFIG_DIR = "/etc/prometheus"
RULES_FILE = "alerts.yaml"
POD_TMP = "/tmp"  # noqa: S108 (a mount path inside the pod: an emptyDir of its own)
# Prometheus's TSDB, an emptyDir. Not /prometheus: the image's only file, the program itself,
# is there, and a volume mounted over it fails the container's start.
PROMETHEUS_DATA = "/data"


def tracing_values() -> dict[str, Any]:
    """The chart's values that send a release's spans to the Jaeger of its own namespace
    (plaintext: the collector is in the release's namespace, on the node's own bridge)."""
    return {
        "tracing": {"otlpEndpoint": f"http://{JAEGER}:{OTLP_GRPC_PORT}", "insecure": True},
        "networkPolicy": {
            "tracing": {
                "peers": [{"podSelector": {"matchLabels": _selector(JAEGER)}}],
                "ports": [OTLP_GRPC_PORT],
            }
        },
    }


def jaeger_config() -> str:
    return jaeger.render_config(
        host="0.0.0.0",
        otlp_grpc=OTLP_GRPC_PORT,
        otlp_http=OTLP_HTTP_PORT,
        query=QUERY_PORT,
        query_grpc=QUERY_GRPC_PORT,
    )


def prometheus_config(
    namespace: str,
    rule_files: tuple[str | Path, ...] = (f"{PROMETHEUS_CONFIG_DIR}/{RULES_FILE}",),
) -> str:
    """prometheus.yml: the pods of ``namespace`` that ask to be scraped, where they ask.

    The target labels ``namespace``, ``pod`` and ``component`` (the pod's
    app.kubernetes.io/component) tell the targets apart; the services' own series carry
    ``service`` already. A pod declaring several ports (the recommender: http and grpc) is
    discovered once per port; the targets are identical after relabelling, so Prometheus
    scrapes it once.
    """
    meta = "__meta_kubernetes_pod_"
    scrape = {
        "job_name": "mpp-pods",
        "kubernetes_sd_configs": [{"role": "pod", "namespaces": {"names": [namespace]}}],
        "relabel_configs": [
            {
                "source_labels": [f"{meta}annotation_prometheus_io_scrape"],
                "regex": "true",
                "action": "keep",
            },
            # A finished pod (a Job's) has nothing to serve.
            {"source_labels": [f"{meta}phase"], "regex": "Succeeded|Failed", "action": "drop"},
            {
                "source_labels": [f"{meta}ip", f"{meta}annotation_prometheus_io_port"],
                "regex": r"(.+);(\d+)",
                "replacement": "$1:$2",
                "target_label": "__address__",
            },
            {
                "source_labels": [f"{meta}annotation_prometheus_io_path"],
                "regex": "(.+)",
                "target_label": "__metrics_path__",
            },
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": [f"{meta}name"], "target_label": "pod"},
            {
                "source_labels": [f"{meta}label_app_kubernetes_io_component"],
                "target_label": "component",
            },
        ],
    }
    return prometheus.render([scrape], rule_files, SCRAPE_INTERVAL)


# -- manifests ------------------------------------------------------------------------------


def _selector(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name}


def _metadata(name: str) -> dict[str, Any]:
    labels = _selector(name) | {"app.kubernetes.io/part-of": PART_OF}
    return {"name": name, "labels": labels | {"app.kubernetes.io/managed-by": "mpp"}}


def _config_map(name: str, data: Mapping[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _metadata(name), "data": data}


def _service(name: str, ports: Mapping[str, int]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(name),
        "spec": {
            "selector": _selector(name),
            "ports": [
                {"name": port, "port": number, "targetPort": port, "protocol": "TCP"}
                for port, number in ports.items()
            ],
        },
    }


@dataclass(frozen=True)
class Workload:
    """One single-replica Deployment of a static program, restricted."""

    name: str
    image: str
    args: list[str]
    ports: dict[str, int]
    probe: tuple[str, str, str]  # readiness path, liveness path, port name
    config: dict[str, str]  # the ConfigMap <name>, mounted read-only at config_dir
    config_dir: str
    writable: dict[str, str]  # emptyDir volume name -> mount path
    memory_limit: str
    service_account: str | None = None  # with its token mounted (to call the API)

    def deployment(self) -> dict[str, Any]:
        security = {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "runAsUser": NOBODY,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        ready, alive, port = self.probe
        container = {
            "name": self.name.removeprefix("mpp-"),
            "image": self.image,
            "imagePullPolicy": "Never",
            "args": self.args,
            "ports": [
                {"name": name, "containerPort": number, "protocol": "TCP"}
                for name, number in self.ports.items()
            ],
            "readinessProbe": {"httpGet": {"path": ready, "port": port}, "periodSeconds": 2},
            "livenessProbe": {
                "httpGet": {"path": alive, "port": port},
                "initialDelaySeconds": 10,
                "periodSeconds": 10,
                "failureThreshold": 6,
            },
            "resources": {
                "requests": {"cpu": "50m", "memory": "128Mi"},
                "limits": {"memory": self.memory_limit},
            },
            "securityContext": security,
            "volumeMounts": [
                {"name": "config", "mountPath": self.config_dir, "readOnly": True},
                *({"name": v, "mountPath": path} for v, path in self.writable.items()),
            ],
        }
        # A changed configuration rolls the pod (a mounted ConfigMap alone would not restart it).
        checksum = hashlib.sha256(json.dumps(self.config, sort_keys=True).encode()).hexdigest()
        pod = {
            "metadata": {
                "labels": _selector(self.name),
                "annotations": {"checksum/config": checksum},
            },
            "spec": {
                "automountServiceAccountToken": self.service_account is not None,
                **({"serviceAccountName": self.service_account} if self.service_account else {}),
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": NOBODY,
                    "runAsGroup": NOBODY,
                    "fsGroup": NOBODY,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [container],
                "volumes": [
                    {"name": "config", "configMap": {"name": self.name}},
                    *({"name": v, "emptyDir": {}} for v in self.writable),
                ],
            },
        }
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _metadata(self.name),
            "spec": {
                "replicas": 1,
                "strategy": {"type": "Recreate"},  # one copy at a time on a small node
                "selector": {"matchLabels": _selector(self.name)},
                "template": pod,
            },
        }

    def manifests(self) -> list[dict[str, Any]]:
        service = _service(self.name, self.ports)
        return [_config_map(self.name, self.config), self.deployment(), service]


def jaeger_workload(image: str) -> Workload:
    ports = {
        "otlp-grpc": OTLP_GRPC_PORT,
        "otlp-http": OTLP_HTTP_PORT,
        "query": QUERY_PORT,
        "query-grpc": QUERY_GRPC_PORT,
    }
    return Workload(
        name=JAEGER,
        image=image,
        args=["--config", f"file:{JAEGER_CONFIG_DIR}/config.yaml"],
        ports=ports,
        probe=("/api/services", "/api/services", "query"),
        config={"config.yaml": jaeger_config()},
        config_dir=JAEGER_CONFIG_DIR,
        writable={"tmp": POD_TMP},
        memory_limit="1Gi",  # up to 20,000 traces in memory
    )


def prometheus_workload(image: str, namespace: str, rules: str) -> Workload:
    return Workload(
        name=PROMETHEUS,
        image=image,
        args=[
            f"--config.file={PROMETHEUS_CONFIG_DIR}/prometheus.yml",
            f"--storage.tsdb.path={PROMETHEUS_DATA}",
            f"--storage.tsdb.retention.time={prometheus.RETENTION}",
            f"--web.listen-address=:{PROMETHEUS_PORT}",
            "--log.level=warn",
        ],
        ports={"http": PROMETHEUS_PORT},
        probe=("/-/ready", "/-/healthy", "http"),
        config={"prometheus.yml": prometheus_config(namespace), RULES_FILE: rules},
        config_dir=PROMETHEUS_CONFIG_DIR,
        writable={"data": PROMETHEUS_DATA, "tmp": POD_TMP},
        memory_limit="1Gi",
        service_account=PROMETHEUS,
    )


def prometheus_access(namespace: str) -> list[dict[str, Any]]:
    """Prometheus's ServiceAccount, and a Role (this namespace only) to discover pods: its
    only service discovery is the pod role, which lists and watches pods and nothing else."""
    rbac = "rbac.authorization.k8s.io/v1"
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _metadata(PROMETHEUS)},
        {
            "apiVersion": rbac,
            "kind": "Role",
            "metadata": _metadata(PROMETHEUS),
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["pods"],
                    "verbs": ["get", "list", "watch"],
                }
            ],
        },
        {
            "apiVersion": rbac,
            "kind": "RoleBinding",
            "metadata": _metadata(PROMETHEUS),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": PROMETHEUS,
            },
            "subjects": [{"kind": "ServiceAccount", "name": PROMETHEUS, "namespace": namespace}],
        },
    ]


def manifests(namespace: str, jaeger_image: str, prometheus_image: str) -> list[dict[str, Any]]:
    """Every object ``up`` applies into ``namespace``."""
    rules = (repo_root() / prometheus.ALERT_RULES).read_text()
    return [
        *jaeger_workload(jaeger_image).manifests(),
        *prometheus_access(namespace),
        *prometheus_workload(prometheus_image, namespace, rules).manifests(),
    ]
