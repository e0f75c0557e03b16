"""The Helm chart on the local cluster: ``mpp deploy up|down|status``.

The release runs the per-service images that ``mpp images build --import`` loads into the
cluster's containerd (``imagePullPolicy: Never``: nothing is pulled), in a namespace that
enforces the ``restricted`` Pod Security Standard. The stores are the local stack's servers
on the host, which pods reach through selector-less Services (the chart's storeEndpoints) at
the host's address on the pod bridge: the way a managed Kafka or PostgreSQL is wired into a
production cluster, and it keeps one set of servers for the processes and the pods.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mpp.auth import key_entry
from mpp.config import Settings, host_port
from mpp.stack import cluster_config, repo_root, stack_dir
from mpp.stack.base import Progress, StackError
from mpp.stack.services import SERVICES, local_api_key

RELEASE = "mpp"
NAMESPACE = "mpp"
# Small requests: the six services and the migration Job fit a 2-CPU node beside the stack.
LOCAL_RESOURCES = {
    "embedder": {"requests": {"cpu": "200m", "memory": "768Mi"}, "limits": {"memory": "2Gi"}},
    "recommender": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1536Mi"}},
}
DEFAULT_RESOURCES = {"requests": {"cpu": "50m", "memory": "192Mi"}, "limits": {"memory": "768Mi"}}


def run(args: Sequence[str], timeout: float = 120, check: bool = True) -> str:
    """A command's stdout; a failure raises StackError with its last lines of stderr."""
    result = subprocess.run(
        list(args), capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-15:]
        raise StackError(
            f"{' '.join(args[:3])} ... failed (exit {result.returncode}):\n" + "\n".join(detail)
        )
    return result.stdout


def tool(script: str) -> Path:
    """A binary that one of the project's build scripts prints (built once, cached)."""
    out = run(["bash", str(repo_root() / "scripts" / script)], timeout=3600)
    return Path(out.strip().splitlines()[-1])


def helm_binary() -> Path:
    return tool("install_helm.sh")


def kubectl_binary() -> Path:
    return tool("cluster/build.sh") / "kubectl"


def deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` laid over it, dictionaries merged key by key."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def store_ports(settings: Settings, kafka_port: int) -> dict[str, int]:
    """The port of each store as pods reach it (the same as on the host, through the
    gateway); Kafka's is its listener advertised to the cluster."""
    return {
        "kafka": kafka_port,
        "neo4j": host_port(settings.neo4j.uri, 7687)[1],
        "postgres": settings.postgres.port,
        "redis": urlsplit(settings.redis.url).port or 6379,
        "milvus": host_port(settings.milvus.uri, 19530)[1],
    }


# The job image's user: the batch data folder on the host is given to it.
JOB_USER = 10001


def local_values(
    settings: Settings,
    tag: str,
    api_key: str,
    gateway: str,
    kafka_port: int,
    batch_data: Path | None = None,
) -> dict[str, Any]:
    """The chart's values for the local cluster, from the local stack's settings; with
    ``batch_data``, the DAG's batch objects too, their data volume on that host folder."""
    ports = store_ports(settings, kafka_port)
    name = RELEASE  # the release is named like the chart, so objects are <release>-<thing>
    # The local stack's admin key (``mpp recommend`` sends it), given to the recommender and
    # analytics as its SHA-256. No ids HMAC key: development's default is what the local
    # processes use too, so pods and processes derive the same message ids.
    secrets: dict[str, Any] = {"apiKeys": [key_entry("local", api_key, ["admin"])]}
    if settings.postgres.password is not None:
        secrets["postgresPassword"] = settings.postgres.password.get_secret_value()
    if settings.neo4j.password is not None:
        secrets["neo4jPassword"] = settings.neo4j.password.get_secret_value()
    return {
        # The local stack's servers speak plaintext only (Kafka PLAINTEXT, PostgreSQL without
        # ssl, bolt://, redis://, http:// Milvus), reached over the host's pod bridge, which no
        # other machine is on: the chart refuses that unless told so explicitly.
        "insecure": True,
        "image": {"repository": "localhost/mpp", "tag": tag, "pullPolicy": "Never"},
        # The local stack's servers have no passwords; production would refuse that.
        "config": {"environment": "development"},
        "kafka": {
            "bootstrapServers": f"{name}-kafka:{ports['kafka']}",
            # Said explicitly: the chart's default is SSL, which the local broker does not speak
            # (the clients then only time out: "Broker transport failure").
            "securityProtocol": "PLAINTEXT",
            "groupPrefix": "k8s",
            "topics": {
                "partitions": settings.kafka.topics.partitions,
                "replicationFactor": 1,
            },
        },
        "neo4j": {"uri": f"bolt://{name}-neo4j:{ports['neo4j']}", "user": settings.neo4j.user},
        "postgres": {
            "host": f"{name}-postgres",
            "port": ports["postgres"],
            "user": settings.postgres.user,
            "database": settings.postgres.database,
            "sslmode": "disable",
        },
        "redis": {"url": f"redis://{name}-redis:{ports['redis']}/0"},
        "milvus": {"uri": f"http://{name}-milvus:{ports['milvus']}"},
        "secrets": secrets,
        "storeEndpoints": {"enabled": True, "addresses": [gateway], "ports": ports},
        "networkPolicy": {
            "stores": {
                store: {"peers": [{"ipBlock": {"cidr": f"{gateway}/32"}}], "ports": [port]}
                for store, port in ports.items()
            }
            | {"bigquery": {"peers": [], "ports": [443]}},
        },
        # One model copy and one torch thread: the node has two CPUs for everything.
        "embedder": {"torchThreads": 1, "encodeWorkers": 1},
        "services": {
            service: {
                "replicas": 1,
                "resources": LOCAL_RESOURCES.get(service, DEFAULT_RESOURCES),
                **({"autoscaling": {"enabled": False}} if service == "recommender" else {}),
            }
            for service in SERVICES
        },
        "migrations": {"resources": DEFAULT_RESOURCES},
        "batch": {
            "enabled": batch_data is not None,
            "data": {
                "hostPath": str(batch_data or ""),
                "accessModes": ["ReadWriteOnce"],
                "size": "20Gi",
            },
            # The SQLite warehouse of the DAG's warehouse_sync, on the data volume.
            "extraEnv": {"MPP_WAREHOUSE__SQLITE_PATH": "/data/warehouse.sqlite"},
        },
    }


class Deployment:
    """The chart installed on the local cluster, as one release in one namespace."""

    def __init__(
        self,
        settings: Settings,
        release: str = RELEASE,
        namespace: str = NAMESPACE,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        from mpp.stack import cluster

        self.settings = settings
        self.release = release
        self.namespace = namespace
        self.overrides = dict(overrides or {})
        self.cluster = cluster
        self.kubeconfig = cluster.kubeconfig_path(settings)
        # JSON is YAML: helm reads it as a values file.
        self.values_file = stack_dir(settings) / "cluster" / f"values-{release}-{namespace}.json"
        self.chart = repo_root() / "helm" / "mpp"
        # The DAG's data volume (raw events, Parquet outputs, Spark's event log), a host folder.
        self.batch_data = stack_dir(settings) / "cluster" / f"batch-data-{namespace}"

    # -- commands -------------------------------------------------------------------------

    def kubectl(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        return run(
            [str(kubectl_binary()), "--kubeconfig", str(self.kubeconfig), *args],
            timeout=timeout,
            check=check,
        )

    def helm(self, *args: str, timeout: float = 900, check: bool = True) -> str:
        return run(
            [str(helm_binary()), "--kubeconfig", str(self.kubeconfig), *args],
            timeout=timeout,
            check=check,
        )

    # -- what it needs ----------------------------------------------------------------------

    def require_cluster(self) -> None:
        if not self.kubeconfig.exists():
            raise StackError(
                f"no local cluster ({self.kubeconfig} is missing): start it with "
                "`make cluster` (mpp cluster up)"
            )
        answer = self.kubectl("get", "--raw", "/readyz", check=False, timeout=20)
        if answer.strip() != "ok":
            raise StackError(
                "the local cluster's API server does not answer: `mpp cluster status` says "
                "which component is down; `make cluster` starts it"
            )

    def missing_images(self, refs: Sequence[str]) -> list[str]:
        return [ref for ref in refs if not self.cluster.image_present(ref)]

    def values(self, tag: str) -> dict[str, Any]:
        key = local_api_key(stack_dir(self.settings))
        base = local_values(
            self.settings,
            tag,
            key,
            cluster_config.HOST_GATEWAY,
            cluster_config.KAFKA_CLUSTER_PORT,
            batch_data=self.batch_data,
        )
        return deep_merge(base, self.overrides)

    # -- up, down, status ---------------------------------------------------------------------

    def ensure_namespace(self) -> None:
        """The namespace, enforcing the restricted Pod Security Standard."""
        manifest = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": self.namespace,
                "labels": {
                    f"pod-security.kubernetes.io/{mode}": "restricted"
                    for mode in ("enforce", "audit", "warn")
                }
                | {"pod-security.kubernetes.io/enforce-version": "latest"},
            },
        }
        self.apply(manifest)

    def apply(self, manifest: Mapping[str, Any]) -> None:
        applied = self.kubectl_with_input(json.dumps(manifest), "apply", "-f", "-")
        if applied.returncode != 0:
            raise StackError(f"kubectl apply failed: {applied.stderr.strip()}")

    def kubectl_with_input(self, text: str, *args: str) -> subprocess.CompletedProcess[str]:
        """kubectl with ``text`` on its standard input; the caller reads the outcome."""
        return subprocess.run(
            [str(kubectl_binary()), "--kubeconfig", str(self.kubeconfig), *args],
            input=text,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def up(self, progress: Progress, tag: str, timeout_s: int = 900) -> None:
        """Install or upgrade the release and wait until every Deployment is Ready."""
        started = time.monotonic()
        self.require_cluster()
        refs = [f"localhost/mpp/{service}:{tag}" for service in SERVICES]
        missing = self.missing_images(refs)
        if missing:
            raise StackError(
                "not in the cluster's containerd: "
                + ", ".join(missing)
                + ". Build and load them with `mpp images build --import` (make images)."
            )
        self.ensure_namespace()
        self.batch_data.mkdir(parents=True, exist_ok=True)
        try:
            os.chown(self.batch_data, JOB_USER, JOB_USER)
        except PermissionError:  # not root: anyone may write there instead
            self.batch_data.chmod(0o777)
        self.values_file.parent.mkdir(parents=True, exist_ok=True)
        self.values_file.write_text(json.dumps(self.values(tag), indent=2))
        progress(
            f"helm upgrade --install {self.release} into namespace {self.namespace} "
            f"(values: {self.values_file})"
        )
        self.helm(
            "upgrade",
            "--install",
            self.release,
            str(self.chart),
            "--namespace",
            self.namespace,
            "-f",
            str(self.values_file),
            "--wait",
            "--timeout",
            f"{timeout_s}s",
            timeout=timeout_s + 60,
        )
        progress(f"release {self.release} ready in {time.monotonic() - started:.0f}s")

    def down(self, progress: Progress, timeout_s: int = 300) -> bool:
        """Uninstall the release (waiting for its objects to go); False if there was none."""
        listed = self.helm("list", "--namespace", self.namespace, "--short", check=False)
        if self.release not in listed.split():
            return False
        self.helm(
            "uninstall",
            self.release,
            "--namespace",
            self.namespace,
            # Foreground: the Deployments go only once their pods are gone.
            "--cascade",
            "foreground",
            "--wait",
            "--timeout",
            f"{timeout_s}s",
            timeout=timeout_s + 60,
        )
        progress(f"release {self.release} uninstalled")
        return True

    def pods(self) -> list[dict[str, Any]]:
        listed = json.loads(self.kubectl("get", "pods", "-n", self.namespace, "-o", "json"))
        return list(listed["items"])
