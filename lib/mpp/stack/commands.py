"""The dev tooling's cluster commands: ``mpp cluster``, ``mpp images``, ``mpp deploy`` (and
``mpp deploy observability``), ``mpp airflow``.

Registered on ``mpp`` by mpp.stack.cli where the dev tooling is installed; the images leave
it out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from mpp.clikit import console, fails_with, out, print_status, progress, settings
from mpp.stack.base import StackError, State

if TYPE_CHECKING:
    from mpp.stack.cluster_observability import Endpoint
    from mpp.stack.deploy import Deployment

_settings = settings
_progress = progress
_print_status = print_status

cluster_app = typer.Typer(
    help="The local single-node Kubernetes cluster (needs root).", no_args_is_help=True
)
images_app = typer.Typer(
    help="The services' images, built with buildah (no Docker engine; dev tooling).",
    no_args_is_help=True,
)
deploy_app = typer.Typer(
    help="The Helm chart on the local cluster (release mpp, namespace mpp).", no_args_is_help=True
)
observability_app = typer.Typer(
    help="Jaeger and Prometheus in a namespace of the local cluster, for a release there.",
    no_args_is_help=True,
)
deploy_app.add_typer(observability_app, name="observability")
airflow_app = typer.Typer(
    help="A local Airflow 3 for the batch DAG (dags/), on loopback.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(cluster_app, name="cluster")
    app.add_typer(images_app, name="images")
    app.add_typer(deploy_app, name="deploy")
    app.add_typer(airflow_app, name="airflow")


# -- cluster --------------------------------------------------------------------------------


@cluster_app.command("up")
def cluster_up() -> None:
    """Build (once), start containerd, the control plane, kubelet, kube-proxy and CoreDNS."""
    from mpp.stack.cluster import Cluster, kubeconfig_path

    settings = _settings()
    with fails_with(
        StackError,
        "cluster up",
        hint="(`mpp cluster down` stops what did start and undoes the network setup)",
    ):
        statuses = Cluster(settings).up(_progress)
    _print_status(statuses)
    console.print(f"kubectl --kubeconfig {kubeconfig_path(settings)} get pods -A")


@cluster_app.command("down")
def cluster_down() -> None:
    """Delete the pods, stop every cluster process, remove its network setup and mounts."""
    from mpp.stack.cluster import Cluster

    with fails_with(StackError, "cluster down"):
        stopped = Cluster(_settings()).down(_progress)
    console.print(f"stopped: {', '.join(stopped) if stopped else 'nothing (none was running)'}")


@cluster_app.command("status")
def cluster_status(
    memory: Annotated[bool, typer.Option(help="Also show each component's RSS.")] = False,
) -> None:
    """Each component and the node's readiness; exit 1 if anything is down."""
    from mpp.stack.cluster import Cluster

    cluster = Cluster(_settings())
    statuses = cluster.status()
    _print_status(statuses)
    if memory:
        usage = cluster.memory_mib()
        parts = ", ".join(f"{name} {mib:.0f}" for name, mib in usage.items())
        out.print(f"RSS MiB: {parts}; total {sum(usage.values()):.0f}")
    if any(s.state == State.DOWN for s in statuses):
        raise typer.Exit(1)


# -- images ---------------------------------------------------------------------------------


@images_app.command("build")
def images_build(
    services: Annotated[
        list[str] | None,
        typer.Argument(help="Services to build (default: all six).", show_default=False),
    ] = None,
    import_: Annotated[
        bool,
        typer.Option(
            "--import/--no-import", help="Import the images into the cluster's containerd."
        ),
    ] = False,
) -> None:
    """Build each service's Dockerfile target as localhost/mpp/<service>:<tree hash>.

    An unchanged tree reuses the cached image tars; --import loads them into containerd.
    """
    from mpp.stack.images import ImageError, build

    with fails_with((ImageError, StackError), "images build"):
        built = build(services or (), progress=_progress, import_images=import_)
    table = Table("service", "image", "size", "archive")
    for image in built:
        table.add_row(image.service, image.ref, f"{image.size_bytes / 1e6:.0f} MB", str(image.tar))
    out.print(table)


# -- airflow --------------------------------------------------------------------------------
AirflowPortOption = Annotated[
    int, typer.Option("--port", help="The api-server's port (UI, REST API) on 127.0.0.1.")
]


@airflow_app.command("up")
def airflow_up(
    port: AirflowPortOption = 18280,
    image: Annotated[
        str | None,
        typer.Option(
            help="Variable mpp_batch_image (default: this checkout's job image, "
            "`python -m mpp.stack.job_image --ref`)."
        ),
    ] = None,
    namespace: Annotated[
        str | None, typer.Option(help="Variable mpp_batch_namespace (default: mpp).")
    ] = None,
    spark_master: Annotated[
        str | None,
        typer.Option(
            help="Variable mpp_spark_master (default: local[*]; "
            "k8s://https://kubernetes.default.svc:443 for executor pods)."
        ),
    ] = None,
) -> None:
    """Start Airflow's api-server, scheduler and dag-processor; reuses what runs.

    Its database is `airflow` in the stack's PostgreSQL (started when down). Sets the DAG's
    Variables (one not given keeps its value, else the local cluster's default: small
    requests, development) and kubernetes_default.
    """
    from mpp.stack.airflow import Airflow
    from mpp.stack.job_image import job_image_ref

    given = {
        "mpp_batch_image": image or job_image_ref(),
        "mpp_batch_namespace": namespace,
        "mpp_spark_master": spark_master,
    }
    with fails_with(StackError, "airflow up"):
        airflow = Airflow(
            _settings(), port=port, variables={k: v for k, v in given.items() if v is not None}
        )
        statuses = airflow.up(_progress)
    _print_status(statuses)
    console.print(f"UI and REST API: {airflow.api_url}  (user admin, `mpp airflow status`)")


@airflow_app.command("down")
def airflow_down(port: AirflowPortOption = 18280) -> None:
    """Stop the Airflow processes that `airflow up` started (and nothing else)."""
    from mpp.stack.airflow import Airflow

    stopped = Airflow(_settings(), port=port).down(_progress)
    console.print(f"stopped: {', '.join(stopped) if stopped else 'nothing (none was ours)'}")


@airflow_app.command("status")
def airflow_status(port: AirflowPortOption = 18280) -> None:
    """Probe Airflow's processes and print the login; exit 1 if any is down."""
    from mpp.stack.airflow import Airflow

    airflow = Airflow(_settings(), port=port)
    statuses = airflow.status()
    _print_status(statuses)
    if airflow.password_file.exists():
        out.print(f"{airflow.api_url}  user: admin  password: {airflow.password()}")
    if any(s.state == State.DOWN for s in statuses):
        raise typer.Exit(1)


# -- deploy ---------------------------------------------------------------------------------


@deploy_app.command("up")
def deploy_up(
    build: Annotated[
        bool, typer.Option(help="Build and import the images first (cached when unchanged).")
    ] = True,
    tracing: Annotated[
        bool,
        typer.Option(
            help="Trace into the namespace's Jaeger (`mpp deploy observability up` first)."
        ),
    ] = False,
) -> None:
    """Install or upgrade the chart on the local cluster, against the local stack; wait until
    every Deployment is Ready."""
    from mpp.stack import Stack
    from mpp.stack.cluster_observability_objects import tracing_values
    from mpp.stack.deploy import Deployment
    from mpp.stack.images import ImageError, image_ref
    from mpp.stack.images import build as build_images

    settings = _settings()
    with fails_with((StackError, ImageError), "deploy up"):
        Stack(settings).up(_progress)
        if build:
            build_images(progress=_progress, import_images=True)
        deployment = Deployment(settings, overrides=tracing_values() if tracing else None)
        deployment.up(_progress, tag=image_ref("ingest").rsplit(":", 1)[1])
    _print_pods(deployment)


@deploy_app.command("down")
def deploy_down() -> None:
    """Uninstall the release (its pods gone before this returns)."""
    from mpp.stack.deploy import Deployment

    with fails_with(StackError, "deploy down"):
        removed = Deployment(_settings()).down(_progress)
    console.print("uninstalled" if removed else "nothing to uninstall")


@deploy_app.command("status")
def deploy_status() -> None:
    """The release's pods; exit 1 if one is not Ready."""
    from mpp.stack.deploy import Deployment

    deployment = Deployment(_settings())
    with fails_with(StackError):
        deployment.require_cluster()
    if not _print_pods(deployment):
        raise typer.Exit(1)


def _print_pods(deployment: Deployment) -> bool:
    """The pods of the release, one row each; whether all are Ready."""
    table = Table("pod", "image", "phase", "ready")
    all_ready = True
    pods = deployment.pods()
    for pod in pods:
        ready = any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in pod["status"].get("conditions", [])
        )
        all_ready = all_ready and ready
        image = pod["spec"]["containers"][0]["image"]
        table.add_row(pod["metadata"]["name"], image, pod["status"]["phase"], str(ready))
    out.print(table)
    return bool(pods) and all_ready


# -- deploy observability ---------------------------------------------------------------------
NamespaceOption = Annotated[
    str | None,
    typer.Option("--namespace", "-n", help="The namespace (default: mpp, the release's)."),
]


@observability_app.command("up")
def observability_up(namespace: NamespaceOption = None) -> None:
    """Build Jaeger and Prometheus (once), import their images, apply them into the namespace
    (restricted) and wait until both are Ready; reuses what runs."""
    from mpp.stack.cluster_observability import Observability

    with fails_with(StackError, "deploy observability up"):
        observability = Observability(_settings(), namespace)
        endpoints = observability.up(_progress)
    _print_endpoints(endpoints)
    console.print(
        f"the release in {observability.namespace} traces into Jaeger with "
        "`mpp deploy up --tracing` (namespace mpp); Prometheus scrapes its pods as they come"
    )


@observability_app.command("down")
def observability_down(namespace: NamespaceOption = None) -> None:
    """Delete Jaeger and Prometheus from the namespace (the namespace and the release stay)."""
    from mpp.stack.cluster_observability import Observability

    with fails_with(StackError, "deploy observability down"):
        Observability(_settings(), namespace).down(_progress)


@observability_app.command("status")
def observability_status(namespace: NamespaceOption = None) -> None:
    """Jaeger's and Prometheus's readiness and where this machine reaches them; exit 1 if one
    is not Ready."""
    from mpp.stack.cluster_observability import Observability

    with fails_with(StackError):
        endpoints = Observability(_settings(), namespace).status()
    _print_endpoints(endpoints)
    if not all(endpoint.ready for endpoint in endpoints):
        raise typer.Exit(1)


def _print_endpoints(endpoints: list[Endpoint]) -> None:
    table = Table("deployment", "ready", "API (from this machine)", "image")
    for endpoint in endpoints:
        table.add_row(endpoint.name, str(endpoint.ready), endpoint.url, endpoint.detail)
    out.print(table)
