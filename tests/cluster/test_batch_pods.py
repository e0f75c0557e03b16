"""The DAG's pods on the real local cluster: each task's pod, as the KubernetesPodOperator builds
it (tests/batch/inspect_dag.py, in Airflow's own environment), is admitted by a server-side dry
run into a namespace enforcing the restricted Pod Security Standard, and the chart's batch Role
(batch.enabled) gives the DAG's ServiceAccount what a Spark driver needs there, and no more.

The namespace gets the chart's batch objects only (no release). The aggregate and
warehouse_sync pods run there for real, from the job image (the test command builds and
imports it: `python -m mpp.stack.job_image --import`), against the module's own database.
"""

from __future__ import annotations

import copy
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mpp.config import Settings
from mpp.stack.cluster import image_present
from mpp.stack.cluster_config import HOST_GATEWAY
from mpp.stack.deploy import Deployment, kubectl_binary
from mpp.stack.job_image import job_image_ref
from tests.batch.conftest import BUILD_TIMEOUT_S
from tests.batch.dag_inspection import inspect
from tests.cluster.conftest import batch_namespace, kubectl

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(BUILD_TIMEOUT_S)]

TASKS = ("embed_backfill", "aggregate", "warehouse_sync")
# What a small cluster without the stores' passwords sets as Variables (the local stack).
SMALL = {"mpp_batch_cpu": "100m", "mpp_batch_memory": "2Gi", "mpp_environment": "development"}


@pytest.fixture(scope="module")
def namespace(
    database_settings_module: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """A restricted namespace holding the chart's batch objects (applied for real), their
    Secret pointing the pods at the module's own database on the host."""
    settings = database_settings_module
    batch_env = {
        "MPP_POSTGRES__HOST": HOST_GATEWAY,
        "MPP_POSTGRES__PORT": str(settings.postgres.port),
        "MPP_POSTGRES__DATABASE": settings.postgres.database,
    }
    data_dir = tmp_path_factory.mktemp("batch-data")
    with batch_namespace(settings, "mpp-batch", batch_env, data_dir) as deployment:
        yield deployment


@pytest.fixture(scope="module")
def dag_pods(
    namespace: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, Any]]:
    """Each task's pod as the operator would send it, with the local job image and this
    namespace (the scheduler's MPP_BATCH_IMAGE / MPP_BATCH_NAMESPACE)."""
    from mpp.stack import job_venvs as venvs

    airflow_python = venvs.ensure_venv("airflow") / "bin" / "python"
    found = inspect(
        airflow_python,
        tmp_path_factory.mktemp("dag"),
        Path(__file__).resolve().parents[2] / "dags",
        MPP_BATCH_IMAGE=job_image_ref(),
        MPP_BATCH_NAMESPACE=namespace.namespace,
        INSPECT_VARIABLES=json.dumps(SMALL),
    )
    return {task: found["tasks"][task]["pod"] for task in TASKS}


def can_i(deployment: Deployment, verb: str, resource: str, namespace: str | None = None) -> bool:
    account = f"system:serviceaccount:{deployment.namespace}:mpp-batch"
    result = subprocess.run(
        [
            str(kubectl_binary()),
            "--kubeconfig",
            str(deployment.kubeconfig),
            "auth",
            "can-i",
            verb,
            resource,
            f"--as={account}",
            "-n",
            namespace or deployment.namespace,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.stdout.strip() == "yes"


@pytest.mark.parametrize("task", TASKS)
def test_the_api_server_admits_the_dags_pod(
    namespace: Deployment, dag_pods: dict[str, dict[str, Any]], task: str
) -> None:
    pod = dag_pods[task]
    assert pod["metadata"]["namespace"] == namespace.namespace
    assert pod["spec"]["serviceAccountName"] == "mpp-batch"
    assert pod["spec"]["containers"][0]["image"] == job_image_ref()
    applied = kubectl(
        namespace, "apply", "--dry-run=server", "-f", "-", stdin=json.dumps(pod), check=False
    )
    assert applied.returncode == 0, applied.stderr
    assert "(server dry run)" in applied.stdout
    # Admission said nothing either (warn mode is restricted too).
    assert "PodSecurity" not in applied.stderr, applied.stderr


def test_the_same_pod_without_its_security_context_is_refused(
    namespace: Deployment, dag_pods: dict[str, dict[str, Any]]
) -> None:
    """The control for the test above: admission does run in that namespace."""
    pod = copy.deepcopy(dag_pods["warehouse_sync"])
    del pod["spec"]["containers"][0]["securityContext"]
    applied = kubectl(
        namespace, "apply", "--dry-run=server", "-f", "-", stdin=json.dumps(pod), check=False
    )
    assert applied.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in applied.stderr, applied.stderr


def test_the_batch_account_may_run_spark_executors_here_only(
    namespace: Deployment,
) -> None:
    for resource in ("pods", "services", "configmaps", "persistentvolumeclaims"):
        for verb in ("create", "get", "list", "watch", "delete", "deletecollection"):
            assert can_i(namespace, verb, resource), f"{verb} {resource}"
    # Nothing beyond: no secrets, no other namespace, nothing cluster-wide.
    assert not can_i(namespace, "get", "secrets")
    assert not can_i(namespace, "create", "deployments")
    assert not can_i(namespace, "create", "pods", namespace="default")
    assert not can_i(namespace, "list", "nodes")


@pytest.mark.parametrize("task", ["warehouse_sync", "aggregate"])
def test_the_dags_pod_runs_to_completion_in_the_job_image(
    namespace: Deployment, dag_pods: dict[str, dict[str, Any]], task: str
) -> None:
    """The operator's pod, as is, with the chart's Secret: `mpp analytics sync` and the Spark
    aggregation (local mode, on the read-only root) against the module's empty database."""
    ref = job_image_ref()
    if not image_present(ref):
        pytest.fail(f"{ref} is not in the cluster: python -m mpp.stack.job_image --import")
    pod = dag_pods[task]
    name = pod["metadata"]["name"]
    kubectl(namespace, "create", "-f", "-", stdin=json.dumps(pod))
    started, phase = time.monotonic(), ""
    while time.monotonic() - started < 600:
        phase = kubectl(namespace, "get", "pod", name, "-o", "jsonpath={.status.phase}").stdout
        if phase in {"Succeeded", "Failed"}:
            break
        time.sleep(3)
    took = time.monotonic() - started
    logs = kubectl(namespace, "logs", name, check=False).stdout
    assert phase == "Succeeded", f"{task}: {phase} after {took:.0f} s\n{logs[-6000:]}"
    if task == "warehouse_sync":
        assert '"aggregates"' in logs and '"facts"' in logs, logs[-3000:]
    else:
        # The job's own comparison of the four aggregates with PostgreSQL's passed.
        lines = [
            line for line in logs.splitlines() if line.startswith("{") and "postgres_equal" in line
        ]
        assert lines, logs[-3000:]
        summary = json.loads(lines[-1])
        assert summary["postgres_equal"] is True, summary
