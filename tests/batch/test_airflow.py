"""The local Airflow that `mpp airflow up` starts (real processes, its database in the stack's
PostgreSQL), checked through its REST API as the admin user. Nothing is triggered: the DAG's
pods need the cluster and the job image."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from mpp.config import Settings
from mpp.stack.airflow import Airflow
from mpp.stack.airflow_api import DAG_FILE, DAG_ID, KUBE_CONN_ID, VARIABLE_DEFAULTS
from mpp.stack.base import State

from .conftest import BUILD_TIMEOUT_S

# A fresh machine builds Airflow's environment and migrates its database first.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(BUILD_TIMEOUT_S)]


@pytest.fixture(scope="module")
def airflow() -> Iterator[Airflow]:
    """Airflow, started (or reused) once; left running like the stack's servers
    (`mpp airflow down` stops it)."""

    def progress(message: str) -> None:
        sys.stderr.write(f"[airflow] {message}\n")

    airflow = Airflow(Settings())
    airflow.up(progress)
    yield airflow


def test_up_is_idempotent(airflow: Airflow) -> None:
    messages: list[str] = []
    started = time.monotonic()
    statuses = Airflow(Settings()).up(messages.append)
    took = time.monotonic() - started
    assert all(s.state != State.DOWN for s in statuses), statuses
    # Nothing started, migrated or changed the second time.
    changes = ("starting", "migrate", "Variable", "connection", "creating")
    assert not [m for m in messages if any(c in m for c in changes)], messages
    assert took < 30, f"a second up took {took:.1f}s: {messages}"
    assert oct(airflow.password_file.stat().st_mode & 0o777) == "0o600"


def test_unauthenticated_requests_are_refused(airflow: Airflow) -> None:
    response = httpx.get(f"{airflow.api_url}/api/v2/dags", timeout=30)
    assert response.status_code == 401, response.text
    bad = httpx.post(
        f"{airflow.api_url}/auth/token",
        json={"username": "admin", "password": "not-the-password"},
        timeout=30,
    )
    assert bad.status_code == 401, bad.text


def test_the_dag_is_listed_without_import_errors(airflow: Airflow) -> None:
    dags = airflow.request("GET", "/api/v2/dags", params={"dag_id_pattern": DAG_ID}).json()
    assert [d["dag_id"] for d in dags["dags"]] == [DAG_ID], dags
    dag = dags["dags"][0]
    assert dag["is_paused"] is True  # nothing runs until someone unpauses or triggers it
    assert str(airflow.repo_root / "dags") in dag["fileloc"]
    everything = airflow.import_errors()
    assert [e for e in everything if e["filename"].endswith(DAG_FILE)] == [], everything
    tasks = airflow.request("GET", f"/api/v2/dags/{DAG_ID}/tasks").json()["tasks"]
    assert sorted(t["task_id"] for t in tasks) == [
        "aggregate",
        "embed_backfill",
        "erase_batch",
        "warehouse_sync",
    ]
    assert {t["operator_name"] for t in tasks} == {"KubernetesPodOperator"}


def test_the_variables_are_set(airflow: Airflow) -> None:
    for key, default in VARIABLE_DEFAULTS.items():
        value = airflow.request("GET", f"/api/v2/variables/{key}").json()["value"]
        # Set by `up`: the DAG's default unless someone gave another value.
        assert value, key
        if key == "mpp_batch_namespace":
            assert value == default == "mpp"


def test_a_given_variable_is_applied_and_kept(airflow: Airflow) -> None:
    key = "mpp_spark_master"
    before = airflow.request("GET", f"/api/v2/variables/{key}").json()["value"]
    try:
        Airflow(Settings(), variables={key: "local[2]"}).up(lambda message: None)
        assert airflow.request("GET", f"/api/v2/variables/{key}").json()["value"] == "local[2]"
        # An up without the value keeps it.
        Airflow(Settings()).up(lambda message: None)
        assert airflow.request("GET", f"/api/v2/variables/{key}").json()["value"] == "local[2]"
    finally:
        Airflow(Settings(), variables={key: before}).up(lambda message: None)


def test_the_kubernetes_connection_points_at_the_cluster_kubeconfig(airflow: Airflow) -> None:
    conn = airflow.request("GET", f"/api/v2/connections/{KUBE_CONN_ID}").json()
    assert conn["conn_type"] == "kubernetes"
    extra = json.loads(conn["extra"])
    assert extra == {
        "kube_config_path": str(airflow.repo_root / ".stack" / "cluster" / "kubeconfig"),
        "in_cluster": False,
    }


def test_the_processes_are_healthy(airflow: Airflow) -> None:
    health = httpx.get(f"{airflow.api_url}/api/v2/monitor/health", timeout=30).json()
    assert health["metadatabase"]["status"] == "healthy"
    assert health["scheduler"]["status"] == "healthy"
    assert health["dag_processor"]["status"] == "healthy"
    assert all(s.state != State.DOWN for s in airflow.status())
