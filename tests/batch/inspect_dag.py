"""Runs in the Airflow environment (not the test runner's): loads dags/ with Airflow's own
DagBag, renders each task's templates for one data interval and builds its pod offline
(``build_pod_request_obj(dry_run=True)``: no cluster, no kubeconfig, no database), then prints
what it found as one JSON object for tests/batch/test_dag.py.

Usage: python inspect_dag.py DAGS_FOLDER DAG_ID INTERVAL_START INTERVAL_END OUT_JSON
(a file, since Airflow logs on stdout); INSPECT_VARIABLES='{"name": "value"}' sets Variables.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any


def main(folder: str, dag_id: str, start: str, end: str) -> dict[str, Any]:
    import pendulum
    from airflow.dag_processing.dagbag import DagBag
    from kubernetes.client import ApiClient

    bag = DagBag(dag_folder=folder)
    report: dict[str, Any] = {
        "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
        "dag_ids": sorted(bag.dag_ids),
    }
    dag = bag.dags.get(dag_id)
    if dag is None:
        return report
    report["schedule"] = type(dag.timetable).__name__
    report["timetable_summary"] = dag.timetable.summary
    report["catchup"] = dag.catchup
    report["max_active_runs"] = dag.max_active_runs
    report["params"] = {k: dag.params[k] for k in dag.params}
    interval_start = pendulum.parse(start)
    interval_end = pendulum.parse(end)
    # The interval a scheduled run of this timetable gets (nothing is run).
    info = dag.timetable.infer_manual_data_interval(run_after=interval_end)
    report["inferred_interval"] = [info.start.isoformat(), info.end.isoformat()]
    tasks: dict[str, Any] = {}
    for task in dag.tasks:
        # Variables resolve to their defaults here: the template context a worker would have,
        # minus the metadata database.
        context: dict[str, Any] = {
            "data_interval_start": interval_start,
            "data_interval_end": interval_end,
            "logical_date": interval_start,
            "ds": interval_start.to_date_string(),
            "params": {k: dag.params[k] for k in dag.params},
            "var": {"value": _Defaults(), "json": _Defaults()},
            "dag": dag,
            "task": task,
            "run_id": "test",
            # What the pod's tracking labels read from the task instance.
            "ti": SimpleNamespace(
                dag_id=dag.dag_id, task_id=task.task_id, map_index=-1, try_number=1
            ),
        }
        entry: dict[str, Any] = {
            "operator": type(task).__name__,
            "module": type(task).__module__,
            "upstream": sorted(task.upstream_task_ids),
            "downstream": sorted(task.downstream_task_ids),
            "retries": task.retries,
            "retry_delay_s": task.retry_delay.total_seconds(),
            "raw_arguments": list(getattr(task, "arguments", []) or []),
        }
        task.render_template_fields(context)
        pod = task.build_pod_request_obj(context, dry_run=True)
        container = pod.spec.containers[0]
        resources = container.resources
        entry.update(
            image=container.image,
            command=container.command,
            args=container.args,
            namespace=pod.metadata.namespace,
            service_account=pod.spec.service_account_name,
            requests=dict(resources.requests or {}),
            limits=dict(resources.limits or {}),
            env={e.name: e.value for e in container.env or []},
            env_from=[
                e.secret_ref.name for e in container.env_from or [] if e.secret_ref is not None
            ],
            labels=dict(pod.metadata.labels or {}),
            # The whole pod as the API server would get it (tests/cluster admit it there).
            pod=ApiClient().sanitize_for_serialization(pod),
        )
        tasks[task.task_id] = entry
    report["tasks"] = tasks
    return report


class _Defaults:
    """``var.value.get(name, default)`` answering the default, as with no Variable set, or the
    value INSPECT_VARIABLES (a JSON object) gives, as with that Variable set."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = json.loads(os.environ.get("INSPECT_VARIABLES", "{}"))

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)


if __name__ == "__main__":
    Path(sys.argv[5]).write_text(json.dumps(main(*sys.argv[1:5]), default=str))
