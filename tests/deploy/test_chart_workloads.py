"""The chart's workloads, rendered offline with the pinned helm: each service's Deployment
(its module, ports, probes, Service, budget, scrape annotations, stop allowance), the pods'
security and writable volumes, and the migration hook Job.

They are checked against the code they deploy: the ports and modules of
lib/mpp/stack/services.py, the CLI's commands, the Dockerfile's user and environment.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mpp.config import AnalyticsSettings, GrpcSettings
from mpp.stack.services import SERVICES, ServiceProcess
from tests.deploy.conftest import FULLNAME, Rendered
from tests.deploy.manifests import (
    VALUE_SETS,
    all_containers,
    container,
    deployment,
    env_of,
    workloads,
)

pytestmark = pytest.mark.timeout(1800)  # the first run builds helm (see conftest)


def port_number(c: dict[str, Any], port: int | str) -> int:
    """A probe's port, by number or by the container port's name."""
    if isinstance(port, int):
        return port
    named = [p["containerPort"] for p in c.get("ports", []) if p["name"] == port]
    assert named, f"container {c['name']} has no port named {port!r}"
    return int(named[0])


# --- Deployments ---------------------------------------------------------------------------


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_each_service_runs_its_module_with_probes_on_its_port(
    default_render: Rendered, service: str
) -> None:
    module, port = SERVICES[service]
    c = container(deployment(default_render, service))
    assert c["command"] == ["python", "-m", module]
    env = env_of(c)
    # The process listens where the probes look.
    assert env["MPP_HTTP__PORT"] == str(port)
    assert env["MPP_HTTP__HOST"] in {"0.0.0.0", "::"}
    assert port_number(c, "http") == port
    for probe, path in (
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ):
        get = c[probe]["httpGet"]
        assert get["path"] == path, probe
        assert port_number(c, get["port"]) == port, probe


def test_recommender_and_analytics_expose_their_other_ports(default_render: Rendered) -> None:
    grpc_port = GrpcSettings().port
    reports_port = AnalyticsSettings().report_port
    recommender = container(deployment(default_render, "recommender"))
    assert env_of(recommender)["MPP_GRPC__PORT"] == str(grpc_port)
    assert port_number(recommender, "grpc") == grpc_port
    analytics = container(deployment(default_render, "analytics"))
    assert env_of(analytics)["MPP_ANALYTICS__REPORT_PORT"] == str(reports_port)
    assert port_number(analytics, "reports") == reports_port

    service = default_render.get("Service", f"{FULLNAME}-recommender")
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert ports["http"]["port"] == SERVICES["recommender"][1]
    assert ports["grpc"]["port"] == grpc_port
    assert ports["grpc"]["appProtocol"] == "grpc"
    reports = default_render.get("Service", f"{FULLNAME}-analytics")
    assert {p["name"]: p["port"] for p in reports["spec"]["ports"]}["reports"] == reports_port


def cpu_cores(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_recommender_workers_match_its_cpu_request(render: Callable[..., Rendered]) -> None:
    """MPP_RECOMMENDER__WORKERS follows services.recommender.workers (0 kept: one per CPU),
    the default request gives each worker 500m, and the workers' metrics directory
    (tempfile, /tmp) is writable."""
    default = render()
    recommender = container(deployment(default, "recommender"))
    workers = int(env_of(recommender)["MPP_RECOMMENDER__WORKERS"])
    assert workers == 2
    assert cpu_cores(recommender["resources"]["requests"]["cpu"]) == workers * 0.5
    mounts = {m["mountPath"] for m in recommender["volumeMounts"]}
    assert "/tmp" in mounts
    for count in ("0", "4"):
        changed = render(set_values=[f"services.recommender.workers={count}"])
        env = env_of(container(deployment(changed, "recommender")))
        assert env["MPP_RECOMMENDER__WORKERS"] == count
    with pytest.raises(Exception, match="workers"):
        render(set_values=["services.recommender.workers=-1"])


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_services_and_budgets_select_the_deployments_pods(
    default_render: Rendered, service: str
) -> None:
    pod = deployment(default_render, service)["spec"]["template"]
    labels = pod["metadata"]["labels"]
    svc = default_render.get("Service", f"{FULLNAME}-{service}")
    assert svc["spec"]["selector"].items() <= labels.items()
    container_ports = {p["name"] for p in container({"spec": {"template": pod}})["ports"]}
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= container_ports
    pdb = default_render.get("PodDisruptionBudget", f"{FULLNAME}-{service}")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # Other services' pods are not selected.
    for other in SERVICES:
        if other != service:
            other_labels = deployment(default_render, other)["spec"]["template"]["metadata"]
            assert not svc["spec"]["selector"].items() <= other_labels["labels"].items()


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_scrape_annotations_point_at_the_metrics_port(
    default_render: Rendered, service: str
) -> None:
    annotations = deployment(default_render, service)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(SERVICES[service][1])
    assert annotations["prometheus.io/path"] == "/metrics"


def test_workers_get_the_local_stop_allowance_to_finish_a_batch(default_render: Rendered) -> None:
    """SIGTERM finishes the batch in hand; `mpp services down` waits ServiceProcess.stop_timeout_s
    for that, and Kubernetes must not kill sooner."""
    for service in SERVICES:
        spec = deployment(default_render, service)["spec"]["template"]["spec"]
        grace = spec["terminationGracePeriodSeconds"]
        if service == "recommender":
            # preStop sleep, then 5 s for in-flight requests and the follower's join.
            pre_stop = container(deployment(default_render, service))["lifecycle"]["preStop"]
            sleep = int(pre_stop["exec"]["command"][1])
            assert grace >= sleep + 15
        else:
            assert grace >= ServiceProcess.stop_timeout_s, service


def test_pods_run_as_the_images_user_on_a_read_only_root(
    default_render: Rendered, dockerfile_user: int
) -> None:
    data_dir = default_render.configmap_data()["MPP_STACK__DIR"]
    for workload in workloads(default_render):
        spec = workload["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == dockerfile_user
        volumes = {v["name"]: v for v in spec["volumes"]}
        for c in all_containers(workload):
            security = c["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            # What must stay writable is an emptyDir.
            for path in ("/tmp", data_dir):
                assert "emptyDir" in volumes[mounts[path]], (workload["metadata"]["name"], path)
            assert c["resources"]["requests"], c["name"]


def test_what_the_image_writes_lands_on_writable_volumes(default_render: Rendered) -> None:
    """The image points HOME, caches and MPP_STACK__DIR at folders the chart mounts writable."""
    from tests.deploy.dockerfile import env_of_stage, instructions

    found = instructions()
    image_env = env_of_stage(found, max(i.stage for i in found))
    writable = ["HOME", "HF_HOME", "XDG_CACHE_HOME", "MPLCONFIGDIR", "MPP_STACK__DIR"]
    assert set(writable) <= set(image_env)
    assert image_env["MPP_STACK__DIR"] == default_render.configmap_data()["MPP_STACK__DIR"]
    for workload in workloads(default_render):
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
        for c in all_containers(workload):
            for name in writable:
                path = image_env[name]
                mounts = [
                    m
                    for m in c["volumeMounts"]
                    if path == m["mountPath"] or path.startswith(m["mountPath"] + "/")
                ]
                assert mounts, f"{c['name']}: {name}={path} is on the read-only root"
                assert "emptyDir" in volumes[mounts[0]["name"]]
                assert not mounts[0].get("readOnly", False)


# --- the migration hook --------------------------------------------------------------------


def cli_command_exists(words: list[str]) -> bool:
    """Whether `mpp <words>` is a command (not a group) of lib/mpp/cli.py."""
    import typer

    from mpp.cli import app

    # Groups are recognised by their subcommands (typer's Group need not be this click's).
    command: Any = typer.main.get_command(app)
    for word in words:
        subcommands = getattr(command, "commands", None)
        if subcommands is None or word not in subcommands:
            return False
        command = subcommands[word]
    return getattr(command, "commands", None) is None and callable(command.callback)


def hook_job(rendered: Rendered) -> dict[str, Any]:
    return rendered.get("Job", f"{FULLNAME}-migrations")


@pytest.mark.parametrize("files", VALUE_SETS, ids=lambda f: f[0] if f else "defaults")
def test_migrations_run_before_install_and_upgrade(
    render: Callable[..., Rendered], files: tuple[str, ...]
) -> None:
    rendered = render(*files)
    job = hook_job(rendered)
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    steps = all_containers(job)
    assert [c["command"] for c in steps] == [["mpp", "db", "migrate"], ["mpp", "topics", "ensure"]]
    for c in steps:
        assert c["command"][0] == "mpp"
        assert cli_command_exists(c["command"][1:]), c["command"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    # Whatever the Job reads exists before it: hooks with a lower weight, or an existing Secret.
    weight = int(annotations["helm.sh/hook-weight"])
    for c in steps:
        for source in c["envFrom"]:
            kind, ref = next(iter(source.items()))
            name = ref["name"]
            if kind == "secretRef" and rendered.find("Secret", name) is None:
                assert name == "mpp-credentials"
                continue
            obj = rendered.get("ConfigMap" if kind == "configMapRef" else "Secret", name)
            obj_annotations = obj["metadata"]["annotations"]
            assert "pre-install" in obj_annotations["helm.sh/hook"]
            assert int(obj_annotations["helm.sh/hook-weight"]) < weight
    # Nor may it need anything else the release creates as an ordinary object.
    ordinary = {
        (d["kind"], d["metadata"]["name"])
        for d in rendered.docs
        if "helm.sh/hook" not in (d["metadata"].get("annotations") or {})
    }
    account = job["spec"]["template"]["spec"].get("serviceAccountName")
    assert ("ServiceAccount", account) not in ordinary
    # The hook's copy of the settings is the services' own.
    assert rendered.configmap_data(f"{FULLNAME}-migrations") == rendered.configmap_data()


def test_topics_step_can_be_left_out(render: Callable[..., Rendered]) -> None:
    rendered = render(set_values=("migrations.ensureTopics=false",))
    steps = all_containers(hook_job(rendered))
    assert [c["command"] for c in steps] == [["mpp", "db", "migrate"]]
    off = render(set_values=("migrations.enabled=false",))
    assert off.of_kind("Job") == []
    assert off.find("ConfigMap", f"{FULLNAME}-migrations") is None
