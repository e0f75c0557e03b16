"""The batch side of tests/cluster/test_dag_run.py: the DAG's tasks, a day of chat events,
the pods seen in the batch namespace, and the ``Batch`` that triggers and waits for runs of
marketing_personalization_pipeline through Airflow's REST API and reads their tasks' logs."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mpp.codecs import parse_timestamp
from mpp.config import Settings
from mpp.samples import chitchat_events
from mpp.stack.airflow import Airflow
from mpp.stack.airflow_api import DAG_ID
from mpp.stack.deploy import Deployment
from tests.e2e.pipeline import Pipeline, Replay, log
from tests.forwarder import Cuttable

TASKS = ("erase_batch", "embed_backfill", "aggregate", "warehouse_sync")
FIRST = TASKS[0]
WRITERS = ("vector-writer", "graph-writer", "analytics")
EXECUTORS = 2
RUN_TIMEOUT_S = 900
NO_SYNC = {"MPP_ANALYTICS__WAREHOUSE_SYNC_ENABLED": "false"}


def own_database(settings: Settings) -> dict[str, str]:
    """What host services need to use ``settings``' database (not the stack's default) and to
    leave the warehouse alone (the DAG's warehouse_sync, or the test, fills it)."""
    return NO_SYNC | {"MPP_POSTGRES__DATABASE": settings.postgres.database}


def day_of_events(count: int = 150) -> tuple[datetime, list[dict[str, Any]]]:
    """The first UTC day of the chat dataset with at least ``count`` events, and its first
    ``count`` events."""
    by_day: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in chitchat_events(20_000):
        day = parse_timestamp(event["timestamp"]).astimezone(UTC).date().isoformat()
        by_day[day].append(event)
        if len(by_day[day]) >= count:
            return datetime.fromisoformat(day).replace(tzinfo=UTC), by_day[day][:count]
    raise AssertionError(f"no day with {count} events in the first 20,000")


class PodWatcher:
    """Every pod seen in the namespace while it runs: its labels, node and last phase."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.seen: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                for pod in self.deployment.pods():
                    name = pod["metadata"]["name"]
                    self.seen[name] = {
                        "labels": pod["metadata"].get("labels", {}),
                        "node": pod["spec"].get("nodeName"),
                        "phase": pod.get("status", {}).get("phase"),
                        "owners": [o["kind"] for o in pod["metadata"].get("ownerReferences", [])],
                    }
            except Exception as exc:  # a missed poll is retried
                sys.stderr.write(f"[dag-run] pod watch: {exc}\n")
            self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def executors(self, task: str) -> set[str]:
        return {
            name
            for name, pod in self.seen.items()
            if pod["labels"].get("mpp/spark-role") == "executor"
            and pod["labels"].get("mpp/task") == task
        }


@dataclass
class Batch:
    """The batch side: Airflow, the namespace, the data volume, the writers, the runs."""

    airflow: Airflow
    deployment: Deployment
    data_dir: Path
    postgres: Cuttable
    writers: Pipeline
    replay: Replay
    day: datetime
    watcher: PodWatcher
    runs: list[str] = field(default_factory=list)
    # Seconds into the day, below 23 hours: the runs' logical dates stay on the day.
    session_offset: int = field(default_factory=lambda: int(time.time()) % 82_800)
    after_first: dict[str, Any] = field(default_factory=dict)

    def trigger(self, seconds: int) -> str:
        """A run for the day (its data interval), its logical date ``seconds`` into it after
        this session's own offset: each run of a day needs a logical date of its own, in this
        session and in any earlier one on the same Airflow database."""
        offset = self.session_offset + seconds
        logical = (self.day + timedelta(seconds=offset)).isoformat()
        interval = (self.day.isoformat(), (self.day + timedelta(days=1)).isoformat())
        run_id = self.airflow.trigger(DAG_ID, logical_date=logical, data_interval=interval)
        self.runs.append(run_id)
        log(f"triggered {run_id}")
        return run_id

    def wait(self, run_id: str) -> str:
        started = time.monotonic()
        state = self.airflow.wait(DAG_ID, run_id, RUN_TIMEOUT_S)
        log(f"{run_id}: {state} in {time.monotonic() - started:.0f}s")
        return state

    def pods(self) -> list[dict[str, Any]]:
        """The namespace's pods, less those of a scheduled run stopped by quiet_schedule."""
        return [p for p in self.deployment.pods() if ours(p["metadata"])]

    def instances(self, run_id: str) -> dict[str, dict[str, Any]]:
        path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances"
        listed = self.airflow.request("GET", path).json()["task_instances"]
        return {t["task_id"]: t for t in listed}

    def explain(self, run_id: str) -> str:
        """Each task's state and the tail of its log, for a failure message."""
        parts = []
        for task, ti in self.instances(run_id).items():
            tries = max(int(ti.get("try_number") or 1), 1)
            text = self.airflow.task_log(DAG_ID, run_id, task, tries)
            parts.append(f"--- {task}: {ti['state']} (try {tries})\n{text[-3000:]}")
        return "\n".join(parts)


def summaries(text: str) -> list[dict[str, Any]]:
    """The JSON summaries the jobs print (``"job": ...``), wherever a log line puts them."""
    decoder = json.JSONDecoder()
    found = []
    index = text.find('{"')
    while index != -1:
        try:
            value, end = decoder.raw_decode(text, index)
        except ValueError:
            end = index + 2
        else:
            if isinstance(value, dict) and "job" in value:
                found.append(value)
        index = text.find('{"', end)
    return found


def summary_of(text: str, job: str) -> dict[str, Any]:
    """The one summary ``job`` printed (the operator may stream a log line twice when it
    reconnects to the pod's log: copies are one summary)."""
    found = {json.dumps(s, sort_keys=True) for s in summaries(text) if s["job"] == job}
    assert len(found) == 1, f"{job}: {len(found)} different summaries in the log\n{text[-3000:]}"
    return dict(json.loads(found.pop()))


def quiet_schedule(airflow: Airflow) -> None:
    """Unpause the DAG without its latest scheduled run: catchup is off, but unpausing makes
    the scheduler start the run of yesterday's interval, which has no data here. That run is
    marked failed (its task, if it started, is stopped) and kept: deleted, the scheduler would
    make it again."""
    airflow.request("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        runs = airflow.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns").json()["dag_runs"]
        scheduled = [r for r in runs if r["run_type"] == "scheduled"]
        active = [r for r in scheduled if r["state"] in {"queued", "running"}]
        for run in active:
            path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}"
            airflow.request("PATCH", path, {"state": "failed"})
            log(f"stopped the scheduled run {run['dag_run_id']}")
        if scheduled and not active:
            return
        time.sleep(0.5)


def ours(pod: dict[str, Any]) -> bool:
    """A pod of the test's runs (triggered ones), not of a scheduled run stopped above."""
    return not str((pod.get("labels") or {}).get("run_id", "")).startswith("scheduled")
