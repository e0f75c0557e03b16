"""marketing_personalization_pipeline, run by the local Airflow on the local cluster.

A day of real chat events (plus duplicates and invalid events) is written to the batch data
volume; a run of the DAG for that day is triggered through Airflow's REST API and its four
tasks run as pods in a restricted namespace of the test's own, the embedding with Spark's
Kubernetes scheduler (``mpp_spark_master`` = k8s://...: the task's pod is the driver, two
executor pods do the work). The EnrichedMessages it produces reach Milvus, Neo4j and
PostgreSQL through writers of the batch side's own (topics, collections, database); the
warehouse is SQLite on the data volume.

Then:
- every pod ran in the cluster and is gone, executors included;
- a second run of the same day changes nothing;
- a run with PostgreSQL unreachable from the pods (a forwarder the test cuts) fails its first
  task with a readable reason in the task's log, keeps the failed pod, and succeeds on the
  retry once PostgreSQL is back;
- the streaming path, fed the same events on topics, collections and a database of its own,
  ends with the same message ids, users and counts in Milvus, Neo4j and the warehouse, and
  vectors within tolerance.

The tests run in file order (one module fixture holds the runs' results).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest

from mpp.catalog import default_campaigns_path, parse_campaigns
from mpp.config import Settings
from mpp.stack.airflow import Airflow
from mpp.stack.airflow_api import DAG_ID, KUBERNETES_MASTER, VARIABLE_DEFAULTS
from mpp.stack.cluster import image_present
from mpp.stack.cluster_config import HOST_GATEWAY, KAFKA_CLUSTER_PORT
from mpp.stack.job_image import job_image_ref
from mpp.stores.campaigns import upsert_campaigns
from mpp.warehouse.sqlite import SqliteWarehouse
from mpp.warehouse.sync import sync_warehouse
from tests.cluster.dag_batch import (
    EXECUTORS,
    FIRST,
    RUN_TIMEOUT_S,
    TASKS,
    WRITERS,
    Batch,
    PodWatcher,
    day_of_events,
    ours,
    own_database,
    quiet_schedule,
    summary_of,
)
from tests.cluster.dag_stores import (
    NEAR_THRESHOLD,
    assert_same_warehouse,
    clear_graph,
    differing_links,
    graph,
    milvus_rows,
    snapshot,
    warehouse,
)
from tests.conftest import with_database, with_topics
from tests.e2e.pipeline import build_replay, isolated_run, log
from tests.forwarder import Cuttable

from .conftest import batch_namespace, kubectl

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(3600)]


@pytest.fixture(scope="module")
def batch(
    stack_settings: Settings, module_unique: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Batch]:
    ref = job_image_ref()
    if not image_present(ref):
        pytest.fail(f"{ref} is not in the cluster: python -m mpp.stack.job_image --import")
    day, events = day_of_events()
    base = with_topics(stack_settings, f"b{module_unique}")
    with with_database(base, f"b{module_unique}") as settings:
        with psycopg.connect(settings.postgres.conninfo(), autocommit=True) as conn:
            upsert_campaigns(conn, parse_campaigns(default_campaigns_path()))
        home = tmp_path_factory.mktemp("batch-writers")
        data_dir = tmp_path_factory.mktemp("batch-data") / "data"
        postgres = Cuttable((settings.postgres.host, settings.postgres.port), host=HOST_GATEWAY)
        topics = settings.kafka.topics
        batch_env = {
            "MPP_POSTGRES__HOST": HOST_GATEWAY,
            "MPP_POSTGRES__PORT": str(postgres.port),
            "MPP_POSTGRES__DATABASE": settings.postgres.database,
            "MPP_KAFKA__BOOTSTRAP_SERVERS": f"{HOST_GATEWAY}:{KAFKA_CLUSTER_PORT}",
            **{
                f"MPP_KAFKA__TOPICS__{name.upper()}": getattr(topics, name)
                for name in ("raw", "validated", "enriched", "dlq", "feedback", "erasure")
            },
            "MPP_WAREHOUSE__BACKEND": "sqlite",
            "MPP_WAREHOUSE__SQLITE_PATH": "/data/warehouse.sqlite",
        }
        with (
            batch_namespace(settings, "mpp-dag", batch_env, data_dir) as deployment,
            isolated_run(
                settings, f"b{module_unique}", home, extra_env=own_database(settings)
            ) as writers,
        ):
            replay = build_replay(
                events, writers.run_id, duplicate_share=0.05, invalid_share=0.03, seed=13
            )
            raw = data_dir / "raw" / "conversations" / f"day={day.date().isoformat()}"
            raw.mkdir(parents=True)
            (raw / "events.jsonl").write_bytes(b"\n".join(replay.records) + b"\n")
            writers.start(*WRITERS)
            airflow = Airflow(Settings())
            airflow.up(lambda message: sys.stderr.write(f"[airflow] {message}\n"))
            before = {
                key: airflow.request("GET", f"/api/v2/variables/{key}", ok=(200, 404)).json()
                for key in VARIABLE_DEFAULTS
            }
            wanted = {
                "mpp_batch_image": ref,
                "mpp_batch_namespace": deployment.namespace,
                "mpp_spark_master": KUBERNETES_MASTER,
                "mpp_spark_executors": str(EXECUTORS),
            }
            Airflow(Settings(), variables=wanted).up(lambda message: None)
            watcher = PodWatcher(deployment)
            try:
                quiet_schedule(airflow)
                yield Batch(airflow, deployment, data_dir, postgres, writers, replay, day, watcher)
            finally:
                watcher.stop()
                airflow.request("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": True})
                restore = {k: v["value"] for k, v in before.items() if "value" in v}
                Airflow(Settings(), variables=restore).up(lambda message: None)
                postgres.cut()
                clear_graph(writers.run_id)


# -- the tests ----------------------------------------------------------------------------------


def test_a_triggered_run_runs_every_task_in_a_pod_and_spark_on_executor_pods(
    batch: Batch,
) -> None:
    run_id = batch.trigger(0)
    state = batch.wait(run_id)
    assert state == "success", batch.explain(run_id)
    instances = batch.instances(run_id)
    for task in TASKS:
        ti = instances[task]
        assert ti["state"] == "success" and ti["try_number"] == 1, ti
        log(f"{task}: {float(ti['duration']):.1f}s ({ti['start_date']} .. {ti['end_date']})")

    # Each task's pod ran in the cluster (on its node), under the run's labels.
    run_pods = {
        name: pod
        for name, pod in batch.watcher.seen.items()
        if pod["labels"].get("dag_id") == DAG_ID and ours(pod)
    }
    by_task = {pod["labels"].get("task_id"): pod for pod in run_pods.values()}
    assert set(by_task) == set(TASKS), run_pods
    assert all(pod["node"] for pod in run_pods.values()), run_pods

    # The embedding's driver started two executor pods, owned by its pod; the job says the
    # same, and it embedded every unique valid event of the day.
    executors = batch.watcher.executors("embed_backfill")
    assert len(executors) == EXECUTORS, executors
    assert all(batch.watcher.seen[e]["owners"] == ["Pod"] for e in executors)
    embed_log = batch.airflow.task_log(DAG_ID, run_id, "embed_backfill")
    summary = summary_of(embed_log, "embed")
    log(f"embed summary: {summary}")
    assert summary["executors"] == EXECUTORS
    assert summary["written"] == batch.replay.unique_valid
    assert summary["produced"] == batch.replay.unique_valid
    assert summary["rejected"] == len(batch.replay.invalid)
    aggregate_log = batch.airflow.task_log(DAG_ID, run_id, "aggregate")
    agg = summary_of(aggregate_log, "aggregate")
    assert agg["postgres_equal"] is True, agg

    # Spark's event log is on the data volume: one per Spark application.
    assert len(list((batch.data_dir / "spark-events").iterdir())) >= 2

    # Nothing is left: succeeded pods are deleted, their executors with them.
    deadline = time.monotonic() + 60
    while (left := batch.pods()) and time.monotonic() < deadline:
        time.sleep(2)
    assert left == [], [p["metadata"]["name"] for p in left]

    batch.after_first = snapshot(batch)
    assert len(batch.after_first["milvus"]) == batch.replay.unique_valid
    assert len(batch.after_first["graph"]) == batch.replay.unique_valid
    # The analytics facts are in the batch side's database, and in the warehouse the
    # warehouse_sync pod wrote on the data volume.
    with psycopg.connect(batch.writers.settings.postgres.conninfo()) as conn:
        row = conn.execute("SELECT count(DISTINCT message_id) FROM message_facts").fetchone()
    assert row is not None and row[0] == batch.replay.unique_valid
    assert len(batch.after_first["warehouse"]["message_facts"]) == batch.replay.unique_valid


def test_a_second_run_of_the_same_day_changes_nothing(batch: Batch) -> None:
    assert batch.after_first, "the first run did not complete"
    run_id = batch.trigger(1)
    assert batch.wait(run_id) == "success", batch.explain(run_id)
    embed_log = batch.airflow.task_log(DAG_ID, run_id, "embed_backfill")
    summary = summary_of(embed_log, "embed")
    assert summary["written"] == 0 and summary["produced"] == 0 and summary["rejected"] == 0
    assert summary["skipped_existing"] == batch.replay.unique_valid
    assert snapshot(batch) == batch.after_first


def test_a_run_without_postgres_fails_readably_and_succeeds_on_retry(batch: Batch) -> None:
    assert batch.after_first, "the first run did not complete"
    # The first task reads the erasure ledger in PostgreSQL: it is the one that fails.
    batch.postgres.cut()
    try:
        run_id = batch.trigger(2)
        deadline = time.monotonic() + RUN_TIMEOUT_S
        state = None
        while time.monotonic() < deadline:
            state = batch.instances(run_id).get(FIRST, {}).get("state")
            if state in {"up_for_retry", "failed", "success"}:
                break
            time.sleep(2)
        assert state == "up_for_retry", batch.explain(run_id)
    finally:
        batch.postgres.restore()
    first_try = batch.airflow.task_log(DAG_ID, run_id, FIRST, 1)
    assert "erase: PostgreSQL is unavailable: connection failed" in first_try, first_try[-4000:]
    assert f'"{HOST_GATEWAY}", port {batch.postgres.port}' in first_try, first_try[-4000:]
    # The failed pod is kept for `kubectl logs`.
    failed = [
        pod
        for pod in batch.pods()
        if pod["metadata"]["labels"].get("task_id") == FIRST
        and pod["status"].get("phase") == "Failed"
    ]
    assert len(failed) == 1, [p["metadata"]["name"] for p in batch.pods()]
    logs = kubectl(batch.deployment, "logs", failed[0]["metadata"]["name"]).stdout
    assert "PostgreSQL is unavailable" in logs

    assert batch.wait(run_id) == "success", batch.explain(run_id)
    instances = batch.instances(run_id)
    assert instances[FIRST]["try_number"] == 2
    assert snapshot(batch) == batch.after_first


def test_the_stream_makes_the_same_records_of_the_same_events(
    batch: Batch, stack_settings: Settings, module_unique: str, tmp_path: Path
) -> None:
    assert batch.after_first, "the first run did not complete"
    expected = batch.after_first
    vectors = milvus_rows(batch.writers.settings)
    batch.writers.stop()
    # The graph is shared: the batch side's nodes go before the stream writes the same ones.
    clear_graph(batch.writers.run_id)
    assert graph(Settings(), batch.writers.run_id) == {}

    unique = f"s{module_unique}"
    sqlite = tmp_path / "stream-warehouse.sqlite"
    with with_database(with_topics(stack_settings, unique), unique) as settings:
        env = own_database(settings) | {"MPP_WAREHOUSE__SQLITE_PATH": str(sqlite)}
        with isolated_run(settings, unique, tmp_path, extra_env=env, campaigns=True) as stream:
            # The same events under the batch side's user ids.
            stream.run_id = batch.writers.run_id
            stream.start("ingest", "embedder", *WRITERS)
            stream.produce(batch.replay.records, batch.replay.keys)
            stream.wait_drained(timeout_s=600)
            got_vectors = milvus_rows(stream.settings)
            got_graph = graph(stream.settings, batch.writers.run_id)
            with psycopg.connect(settings.postgres.conninfo(), autocommit=True) as conn:
                store = SqliteWarehouse(sqlite)
                try:
                    store.ensure_schema()
                    sync_warehouse(conn, store)
                finally:
                    store.close()
            got_warehouse = warehouse(sqlite)

    assert {k: v[0] for k, v in got_vectors.items()} == expected["milvus"]
    ids = sorted(vectors)
    np.testing.assert_allclose(
        np.stack([got_vectors[i][1] for i in ids]), np.stack([vectors[i][1] for i in ids]),
        atol=1e-4,
    )  # fmt: skip
    differing = differing_links(got_graph, expected["graph"])
    assert_same_warehouse(got_warehouse, expected["warehouse"], differing)
    counts = {name: len(rows) for name, rows in got_warehouse.items()}
    log(
        f"parity: {len(ids)} messages in Milvus, {len(got_graph)} in Neo4j, warehouse rows "
        f"{counts}; links or intents within {NEAR_THRESHOLD} of their threshold on one side "
        f"only: {differing}"
    )
    assert counts["message_facts"] == batch.replay.unique_valid
