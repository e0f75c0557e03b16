"""The Airflow DAG, loaded by Airflow itself (its own environment, a subprocess): no import
error, the four KubernetesPodOperator tasks in order, and the pods they would launch (built
offline, nothing contacts a cluster) run the jobs with arguments the jobs accept."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from mpp_jobs import aggregate, embed, erase

from .conftest import BUILD_TIMEOUT_S, REPO, run_python
from .dag_inspection import DAG_ID, INTERVAL, inspect

# The first test of a fresh machine builds Airflow's environment in its setup.
pytestmark = pytest.mark.timeout(BUILD_TIMEOUT_S)


@pytest.fixture(scope="module")
def dag(airflow_python: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return inspect(airflow_python, tmp_path_factory.mktemp("dag"), REPO / "dags")


LAUNCH = ["python", "-m", "mpp_jobs.launch"]


def _job_args(args: list[str], job: str) -> list[str]:
    """The job's own arguments: what follows ``submit --master MASTER JOB`` in the launcher's
    command line (jobs/mpp_jobs/launch.py hands them to the job's script)."""
    assert args[0] == "submit" and args[1] == "--master" and args[3] == job, args
    return args[4:]


def test_dag_loads_without_import_errors_and_is_scheduled_daily(dag: dict[str, Any]) -> None:
    assert dag["import_errors"] == {}
    assert DAG_ID in dag["dag_ids"]
    assert dag["schedule"] == "CronDataIntervalTimetable"
    assert dag["timetable_summary"] == "0 0 * * *"
    assert dag["catchup"] is False
    assert dag["max_active_runs"] == 1
    # A run after midnight UTC covers the day before: [27th, 28th).
    assert dag["inferred_interval"] == list(INTERVAL)


def test_tasks_are_pod_operators_in_order(dag: dict[str, Any]) -> None:
    tasks = dag["tasks"]
    assert set(tasks) == {"erase_batch", "embed_backfill", "aggregate", "warehouse_sync"}
    for task in tasks.values():
        assert task["operator"] == "KubernetesPodOperator"
        assert task["module"] == "airflow.providers.cncf.kubernetes.operators.pod"
        assert task["retries"] >= 2 and task["retry_delay_s"] >= 60
        assert task["image"] == "mpp-jobs:latest"
        assert task["namespace"] == "mpp"
        assert task["service_account"] == "mpp-batch"
        assert task["requests"] == {"cpu": "2", "memory": "6Gi"}
        assert task["env_from"] == ["mpp-batch-env"]
        _assert_restricted(task["pod"])
    # The batch outputs lose the erased users first (jobs/mpp_jobs/erase.py).
    assert tasks["erase_batch"]["upstream"] == []
    assert tasks["erase_batch"]["downstream"] == ["embed_backfill"]
    assert tasks["embed_backfill"]["upstream"] == ["erase_batch"]
    assert tasks["embed_backfill"]["downstream"] == ["aggregate"]
    assert tasks["aggregate"]["upstream"] == ["embed_backfill"]
    assert tasks["aggregate"]["downstream"] == ["warehouse_sync"]
    assert tasks["warehouse_sync"]["upstream"] == ["aggregate"]
    assert tasks["warehouse_sync"]["downstream"] == []


RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _assert_restricted(pod: dict[str, Any]) -> None:
    """What the restricted Pod Security Standard asks of a pod (tests/cluster/test_batch_pods.py
    has the API server admit it), and the writable scratch a read-only root needs."""
    spec = pod["spec"]
    assert spec["securityContext"] == {
        "fsGroup": 10001,
        "runAsGroup": 10001,
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    (container,) = spec["containers"]
    assert container["securityContext"] == RESTRICTED_CONTAINER
    assert {v["name"]: v for v in spec["volumes"]} == {
        "tmp": {"name": "tmp", "emptyDir": {}},
        "work": {"name": "work", "emptyDir": {}},
        # The batch data volume (the chart's batch.data claim): raw events, outputs, event log.
        "data": {"name": "data", "persistentVolumeClaim": {"claimName": "mpp-batch-data"}},
    }
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts == {"/tmp": "tmp", "/var/lib/mpp": "work", "/data": "data"}
    assert not spec.get("hostNetwork") and "hostPath" not in str(spec["volumes"])


def test_pods_run_the_jobs_with_the_interval_and_arguments_they_accept(
    dag: dict[str, Any],
) -> None:
    tasks = dag["tasks"]
    erase_task = tasks["erase_batch"]
    assert erase_task["command"] == LAUNCH
    assert erase_task["args"][:4] == ["submit", "--master", "local[*]", "erase"]
    args = erase.parser().parse_args(_job_args(erase_task["args"], "erase"))
    assert args.data == "/data" and args.warehouse

    embed_task = tasks["embed_backfill"]
    assert embed_task["command"] == LAUNCH
    assert embed_task["args"][:4] == ["submit", "--master", "local[*]", "embed"]
    args = embed.parser().parse_args(_job_args(embed_task["args"], "embed"))
    assert (args.date_from, args.date_to) == ("2026-11-27", "2026-11-28")
    assert args.input == "/data/raw/conversations/day=2026-11-27/"
    assert args.output == "/data/enriched-messages/"
    assert args.kafka and args.mode == "new" and args.campaigns == "postgres"

    aggregate_task = tasks["aggregate"]
    assert aggregate_task["command"] == LAUNCH
    args = aggregate.parser().parse_args(_job_args(aggregate_task["args"], "aggregate"))
    assert args.facts == "postgres" and args.compare_postgres and args.write_warehouse
    assert args.logical_date == "2026-11-27"

    sync = tasks["warehouse_sync"]
    assert [*sync["command"], *sync["args"]] == ["mpp", "analytics", "sync"]
    # The project's own CLI has that command.
    cli = ["-m", "mpp.cli", "analytics", "sync", "--help"]
    help_ = run_python(Path(sys.executable), cli, dict(os.environ))
    assert "warehouse" in help_.stdout


def test_deployment_settings_come_from_the_environment(
    airflow_python: Path, tmp_path: Path
) -> None:
    found = inspect(
        airflow_python,
        tmp_path,
        REPO / "dags",
        MPP_BATCH_IMAGE="registry.example/mpp-jobs:1.2.3",
        MPP_BATCH_NAMESPACE="batch",
        MPP_BATCH_SERVICE_ACCOUNT="spark",
        MPP_BATCH_CPU="4",
        MPP_BATCH_MEMORY="12Gi",
    )
    for task in found["tasks"].values():
        assert task["image"] == "registry.example/mpp-jobs:1.2.3"
        assert task["namespace"] == "batch"
        assert task["service_account"] == "spark"
        assert task["requests"] == {"cpu": "4", "memory": "12Gi"}
        assert task["limits"] == {"memory": "12Gi"}
        _assert_restricted(task["pod"])


def test_resources_come_from_airflow_variables(airflow_python: Path, tmp_path: Path) -> None:
    """The Variables mpp_batch_cpu and mpp_batch_memory, rendered when the task runs, win over
    the environment's defaults (a small cluster lowers them without a new deployment)."""
    found = inspect(
        airflow_python,
        tmp_path,
        REPO / "dags",
        MPP_BATCH_CPU="4",
        INSPECT_VARIABLES='{"mpp_batch_cpu": "500m", "mpp_batch_memory": "1536Mi"}',
    )
    for task in found["tasks"].values():
        assert task["requests"] == {"cpu": "500m", "memory": "1536Mi"}
        assert task["limits"] == {"memory": "1536Mi"}
        assert task["env"]["MPP_ENVIRONMENT"] == "production"


def test_pods_run_in_production_unless_a_variable_says_otherwise(
    dag: dict[str, Any], airflow_python: Path, tmp_path: Path
) -> None:
    for task in dag["tasks"].values():
        assert task["env"]["MPP_LOG_FORMAT"] == "json"
        assert task["env"]["MPP_ENVIRONMENT"] == "production"
    found = inspect(
        airflow_python,
        tmp_path,
        REPO / "dags",
        INSPECT_VARIABLES='{"mpp_environment": "development"}',
    )
    for task in found["tasks"].values():
        assert task["env"]["MPP_ENVIRONMENT"] == "development"


def test_pods_tell_the_spark_launcher_what_a_kubernetes_driver_needs(
    airflow_python: Path, tmp_path: Path
) -> None:
    """The pod's own name, namespace and IP (downward API), its image for the executors, and
    the executors' count and requests from Variables (jobs/mpp_jobs/launch.py reads them)."""
    variables = {
        "mpp_spark_master": "k8s://https://kubernetes.default.svc:443",
        "mpp_spark_executors": "3",
        "mpp_spark_executor_cpu": "250m",
        "mpp_batch_image": "localhost/mpp/jobs:t1",
    }
    found = inspect(
        airflow_python, tmp_path, REPO / "dags", INSPECT_VARIABLES=json.dumps(variables)
    )
    embed_task = found["tasks"]["embed_backfill"]
    assert embed_task["args"][:4] == ["submit", "--master", variables["mpp_spark_master"], "embed"]
    env = embed_task["env"]
    assert env["MPP_SPARK_IMAGE"] == "localhost/mpp/jobs:t1" == embed_task["image"]
    assert (env["MPP_SPARK_EXECUTORS"], env["MPP_SPARK_EXECUTOR_CPU"]) == ("3", "250m")
    assert env["MPP_SPARK_EXECUTOR_MEMORY"] == "1g"
    assert env["MPP_BATCH_ENV_SECRET"] == "mpp-batch-env"
    assert (env["MPP_BATCH_DATA_CLAIM"], env["MPP_BATCH_DATA_DIR"]) == ("mpp-batch-data", "/data")
    assert env["MPP_TASK"] == "embed_backfill"
    fields = {
        e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
        for e in embed_task["pod"]["spec"]["containers"][0]["env"]
        if "valueFrom" in e
    }
    assert fields == {
        "MPP_POD_NAME": "metadata.name",
        "MPP_POD_NAMESPACE": "metadata.namespace",
        "MPP_POD_IP": "status.podIP",
    }


def test_a_broken_dag_is_reported_as_an_import_error(airflow_python: Path, tmp_path: Path) -> None:
    """The check above would catch a DAG that no longer imports: Airflow reports it."""
    folder = tmp_path / "dags"
    folder.mkdir()
    source = (REPO / "dags" / f"{DAG_ID}.py").read_text()
    (folder / f"{DAG_ID}.py").write_text(
        source.replace("embed_backfill >> aggregate", "embed_backfill >> aggregat")
    )
    found = inspect(airflow_python, tmp_path, folder)
    assert DAG_ID not in found["dag_ids"]
    assert any("aggregat" in error for error in found["import_errors"].values())
