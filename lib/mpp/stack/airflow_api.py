"""A small client of Airflow 3's REST API (``/api/v2``), logged in as the local admin.

``mpp.stack.airflow.Airflow`` is one; the tests use it to read what ``mpp airflow up`` set,
and later to trigger the DAG and read its tasks' states and logs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from mpp.stack.base import Progress, StackError, tail

DAG_ID = "marketing_personalization_pipeline"
DAG_FILE = "marketing_personalization_pipeline.py"
KUBE_CONN_ID = "kubernetes_default"
# The DAG's Variables (dags/marketing_personalization_pipeline.py), and what `mpp airflow up`
# sets where one is missing: values for the local one-node cluster (two CPUs, the local
# stack's servers without passwords), not the DAG's production defaults.
VARIABLE_DEFAULTS: dict[str, str] = {
    "mpp_batch_image": "mpp-jobs:latest",
    "mpp_batch_namespace": "mpp",
    "mpp_spark_master": "local[*]",
    "mpp_batch_cpu": "100m",
    "mpp_batch_memory": "2Gi",
    "mpp_environment": "development",
    "mpp_spark_executors": "2",
    "mpp_spark_executor_cpu": "100m",
    "mpp_spark_executor_memory": "1g",
}
# The in-cluster API server, as a Spark master (the DAG's pods are its drivers).
KUBERNETES_MASTER = "k8s://https://kubernetes.default.svc:443"
FINISHED = ("success", "failed")


class AirflowClient:
    """REST calls against ``api_url`` with a JWT from ``/auth/token``."""

    api_url: str

    def password(self) -> str:
        raise NotImplementedError

    def __init__(self) -> None:
        self._token: str | None = None

    def token(self) -> str:
        """A JWT for the REST API (``Authorization: Bearer ...``), as admin."""
        if self._token is None:
            response = httpx.post(
                f"{self.api_url}/auth/token",
                json={"username": "admin", "password": self.password()},
                timeout=30,
            )
            if response.status_code not in (200, 201):
                raise StackError(
                    f"airflow: login as admin refused ({response.status_code}: "
                    f"{response.text[:300]}); was the api-server started by `mpp airflow up` "
                    "from this checkout?"
                )
            self._token = str(response.json()["access_token"])
        return self._token

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        ok: Sequence[int] = (200, 201),
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One authenticated call; an answer not in ``ok`` raises StackError with its body."""
        response = httpx.request(
            method,
            f"{self.api_url}{path}",
            json=body,
            params=params,
            headers={"Authorization": f"Bearer {self.token()}"},
            timeout=30,
        )
        if response.status_code not in ok:
            raise StackError(
                f"airflow: {method} {path} answered {response.status_code}: {response.text[:500]}"
            )
        return response

    def import_errors(self) -> list[dict[str, Any]]:
        """``/api/v2/importErrors``: ``filename`` (relative to its bundle's folder),
        ``bundle_name`` and ``stack_trace`` of each broken DAG file."""
        errors = self.request("GET", "/api/v2/importErrors").json()["import_errors"]
        return list(errors)

    def ensure_variable(
        self, key: str, value: str | None, default: str, progress: Progress
    ) -> None:
        """Set the Variable ``key`` to ``value`` unless it has it; with ``value`` None, keep
        the value it has, or set ``default`` when it has none."""
        got = self.request("GET", f"/api/v2/variables/{key}", ok=(200, 404))
        current = got.json().get("value") if got.status_code == 200 else None
        wanted = value if value is not None else default if current is None else current
        if current == wanted:
            return
        progress(f"airflow: Variable {key} = {wanted}")
        body = {"key": key, "value": wanted}
        if current is None:
            self.request("POST", "/api/v2/variables", body)
        else:
            self.request("PATCH", f"/api/v2/variables/{key}", body)

    def ensure_connection(
        self, conn_id: str, conn_type: str, extra: dict[str, Any], progress: Progress
    ) -> None:
        """Create or correct the connection ``conn_id`` (type and extra), if it differs."""
        got = self.request("GET", f"/api/v2/connections/{conn_id}", ok=(200, 404))
        if got.status_code == 200:
            conn = got.json()
            if (
                conn.get("conn_type") == conn_type
                and json.loads(conn.get("extra") or "{}") == extra
            ):
                return
        progress(f"airflow: connection {conn_id} ({conn_type}) {json.dumps(extra)}")
        body = {"connection_id": conn_id, "conn_type": conn_type, "extra": json.dumps(extra)}
        if got.status_code == 200:
            self.request("PATCH", f"/api/v2/connections/{conn_id}", body)
        else:
            self.request("POST", "/api/v2/connections", body)

    def wait_for_dag(self, dag_id: str, timeout_s: float, log: Path, progress: Progress) -> None:
        """Until the dag-processor has stored ``dag_id``; its file's import error, or the
        deadline, raises StackError (with the tail of ``log``)."""
        deadline = time.monotonic() + timeout_s
        waiting = False
        while self.request("GET", f"/api/v2/dags/{dag_id}", ok=(200, 404)).status_code != 200:
            broken = [e for e in self.import_errors() if e["filename"].endswith(DAG_FILE)]
            if broken:
                raise StackError(
                    f"airflow: {DAG_FILE} does not import:\n{broken[0]['stack_trace']}"
                )
            if time.monotonic() > deadline:
                raise StackError(
                    f"airflow: {dag_id} did not appear within {timeout_s:.0f}s; see {log}:\n"
                    f"{tail(log)}"
                )
            if not waiting:
                progress(f"airflow: waiting for the dag-processor to parse {dag_id}")
                waiting = True
            time.sleep(2)

    def trigger(
        self,
        dag_id: str = DAG_ID,
        logical_date: str | None = None,
        data_interval: tuple[str, str] | None = None,
        conf: Mapping[str, Any] | None = None,
    ) -> str:
        """Unpause ``dag_id`` and trigger a run; returns its run_id. Dates are ISO 8601 with a
        time zone; ``data_interval`` needs ``logical_date``.

        A paused DAG's runs never start; unpaused, the scheduler also starts the DAG's latest
        daily run, which (``max_active_runs=1``) may go first: pause the DAG and delete the
        runs you do not want."""
        self.request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        body: dict[str, Any] = {"logical_date": logical_date, "conf": dict(conf or {})}
        if data_interval is not None:
            body["data_interval_start"], body["data_interval_end"] = data_interval
        run = self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", body).json()
        return str(run["dag_run_id"])

    def wait(self, dag_id: str, run_id: str, timeout_s: float) -> str:
        """The run's final state (``success``/``failed``), or its state when time ran out."""
        deadline = time.monotonic() + timeout_s
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"
        while True:
            state = str(self.request("GET", path).json()["state"])
            if state in FINISHED or time.monotonic() >= deadline:
                return state
            time.sleep(3)

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
        instances = self.request("GET", path).json()["task_instances"]
        return {t["task_id"]: t["state"] for t in instances}

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        content = self.request("GET", path, params={"full_content": "true"}).json()["content"]
        lines = []
        for item in content:
            if isinstance(item, dict):
                fields = (item.get("timestamp"), item.get("level"), item.get("event"))
                lines.append(" ".join(str(f) for f in fields if f))
                lines += [
                    f"  {e['exc_type']}: {e['exc_value']}" for e in item.get("error_detail", [])
                ]
            else:
                lines.append(str(item))
        return "\n".join(lines)
