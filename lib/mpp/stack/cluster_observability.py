"""Jaeger and Prometheus in the local cluster: ``mpp deploy observability up|down|status``.

The same binaries as the local stack's servers (scripts/install_observability.sh, through
mpp.stack.gobuilds), each packed alone into an image (``mpp.stack.cluster_image``: one layer,
the static program as its entrypoint; no base, no shell) named
``localhost/mpp/<name>:<version>-<hash of the binary>`` and imported into the cluster's
containerd, so a new image appears only when the binary changes; the earlier tags leave
containerd. Both run in the namespace of a release (restricted Pod Security, user 65534, a
read-only root, emptyDir for what they write):

- ``mpp-jaeger``: the Jaeger v2 all-in-one with mpp.stack.jaeger's configuration on 0.0.0.0
  (traces in memory); OTLP gRPC 4317 and HTTP 4318, the query API and UI on 16686. A release
  traces into it with the chart's ``tracing`` values (``mpp deploy up --tracing``:
  mpp.stack.cluster_observability_objects.tracing_values).
- ``mpp-prometheus``: Prometheus discovering the namespace's pods through the Kubernetes API
  (a Role to get, list and watch the pods there, nothing more), scraping
  those annotated ``prometheus.io/scrape: "true"`` at their ``prometheus.io/port`` and
  ``path`` (the chart's ``metrics.podAnnotations``), and evaluating the chart's alert rules
  (helm/mpp/files/alerts.yaml); its query API on 9090.

The host reaches both at their Services' ClusterIPs (``service_ip``).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from mpp.config import Settings
from mpp.stack import gobuilds, repo_root
from mpp.stack.base import Progress, StackError
from mpp.stack.cluster import cluster_dir
from mpp.stack.cluster_containerd import image_present, import_image, prune_images
from mpp.stack.cluster_image import write_program_image
from mpp.stack.cluster_observability_objects import (
    JAEGER,
    PART_OF,
    PROMETHEUS,
    PROMETHEUS_PORT,
    QUERY_PORT,
    manifests,
)
from mpp.stack.deploy import NAMESPACE, Deployment
from mpp.stack.images import images_dir

READY_S = 180


def image_ref(name: str, binary: Path) -> str:
    """``localhost/mpp/<name>:<version>-<12 hex of the binary's SHA-256>``; the version is
    read from the build's folder (``<name>-<version>/bin/<name>``) when it has that shape."""
    with binary.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()[:12]
    version = binary.parent.parent.name.removeprefix(f"{name}-")
    tag = f"{version}-{digest}" if re.fullmatch(r"v[0-9][0-9A-Za-z.]*", version) else digest
    return f"localhost/mpp/{name}:{tag}"


def load_image(name: str, binary: Path, progress: Progress) -> str:
    """The binary's image in the cluster's containerd (packed and imported when missing),
    without the earlier tags of ``name``; returns its ref."""
    ref = image_ref(name, binary)
    if image_present(ref):
        progress(f"{name}: {ref} already in the cluster's containerd")
    else:
        progress(f"{name}: packing {binary} as {ref} and importing it into containerd")
        tar = images_dir() / f"{name}-{ref.rsplit(':', 1)[1]}.tar"
        write_program_image(tar, ref, binary)
        try:
            import_image(tar)
        finally:
            tar.unlink(missing_ok=True)  # containerd holds it now
    prune_images({ref}, [f"localhost/mpp/{name}:"])
    return ref


# -- up, down, status -----------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    name: str
    ready: bool
    url: str  # at the Service's ClusterIP, from this machine
    detail: str


class Observability:
    """Jaeger and Prometheus in one namespace of the local cluster."""

    def __init__(self, settings: Settings, namespace: str | None = None) -> None:
        self.settings = settings
        self.namespace = namespace or NAMESPACE  # the release's, by default
        # Its kubectl, apply and restricted namespace; no release is installed through it.
        self.cluster = Deployment(settings, namespace=self.namespace)
        self.build_log = cluster_dir(settings) / "observability-build.log"

    def kubectl(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        return self.cluster.kubectl("-n", self.namespace, *args, timeout=timeout, check=check)

    def binaries(self, progress: Progress) -> tuple[Path, Path]:
        jaeger_binary, prometheus_binary = gobuilds.binary(
            repo_root(),
            ("jaeger", "prometheus"),
            self.settings.stack.cache_dir,
            self.build_log,
            progress,
        )
        return jaeger_binary, prometheus_binary

    def up(self, progress: Progress, timeout_s: float = READY_S) -> list[Endpoint]:
        """Build (once), import, apply, and wait until both Deployments are Ready (at most
        ``timeout_s`` once applied)."""
        started = time.monotonic()
        self.cluster.require_cluster()
        jaeger_binary, prometheus_binary = self.binaries(progress)
        jaeger_image = load_image("jaeger", jaeger_binary, progress)
        prometheus_image = load_image("prometheus", prometheus_binary, progress)
        self.cluster.ensure_namespace()
        objects = manifests(self.namespace, jaeger_image, prometheus_image)
        progress(f"applying {len(objects)} objects into namespace {self.namespace}")
        listed = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
        applied = self.cluster.kubectl_with_input(listed, "-n", self.namespace, "apply", "-f", "-")
        if applied.returncode != 0:
            raise StackError(
                f"kubectl apply into {self.namespace} failed: {applied.stderr.strip()}"
            )
        deadline = time.monotonic() + timeout_s  # from here: a first build may take minutes
        for name in (JAEGER, PROMETHEUS):
            self.wait_ready(name, deadline)
            progress(f"{name} ready ({time.monotonic() - started:.0f}s)")
        return self.status()

    def wait_ready(self, name: str, deadline: float) -> None:
        """Until the Deployment's rollout is complete; past ``deadline``, an error with the
        pod's state and its last log lines."""
        left = max(1, int(deadline - time.monotonic()))
        try:
            self.kubectl(
                "rollout", "status", f"deployment/{name}", f"--timeout={left}s", timeout=left + 30
            )
            return
        except StackError as exc:
            reason = str(exc)
        pods = self.kubectl("get", "pods", "-l", f"app.kubernetes.io/name={name}", "-o", "wide")
        logs = self.kubectl("logs", f"deployment/{name}", "--tail=20", check=False)
        raise StackError(
            f"{name} not ready in namespace {self.namespace} after {left}s: {reason}\n"
            f"{pods.strip()}\nits last log lines:\n{logs.strip() or '(none)'}"
        )

    def down(self, progress: Progress) -> list[str]:
        """Delete what ``up`` applied (the namespace stays); the names of what went."""
        self.cluster.require_cluster()
        deleted = self.kubectl(
            "delete",
            "deployment,service,configmap,serviceaccount,role,rolebinding",
            "-l",
            f"app.kubernetes.io/part-of={PART_OF}",
            "--wait=true",
            "--timeout=120s",
            "-o",
            "name",
            timeout=180,
        )
        gone = deleted.split()  # kind/name, one a line
        progress(f"deleted from namespace {self.namespace}: {', '.join(gone) or 'nothing'}")
        return gone

    def service_ip(self, name: str) -> str:
        """The Service's ClusterIP ('' when there is none)."""
        return self.kubectl(
            "get", "service", name, "-o", "jsonpath={.spec.clusterIP}", check=False
        ).strip()

    def status(self) -> list[Endpoint]:
        """Jaeger's query API and Prometheus's, each with its Deployment's readiness."""
        self.cluster.require_cluster()
        listed = json.loads(
            self.kubectl(
                "get", "deployments", "-l", f"app.kubernetes.io/part-of={PART_OF}", "-o", "json"
            )
        )
        found = {d["metadata"]["name"]: d for d in listed["items"]}
        endpoints = []
        for name, port in ((JAEGER, QUERY_PORT), (PROMETHEUS, PROMETHEUS_PORT)):
            workload = found.get(name)
            if workload is None:
                endpoints.append(Endpoint(name, False, "", "not deployed"))
                continue
            ready = int(workload.get("status", {}).get("readyReplicas") or 0)
            image = workload["spec"]["template"]["spec"]["containers"][0]["image"]
            ip = self.service_ip(name)
            url = f"http://{ip}:{port}" if ip else ""
            endpoints.append(Endpoint(name, ready >= 1, url, image))
        return endpoints
