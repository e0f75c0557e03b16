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

import json
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from mpp.catalog import default_campaigns_path, parse_campaigns
from mpp.codecs import parse_timestamp
from mpp.config import Settings
from mpp.samples import chitchat_events
from mpp.stack.airflow import Airflow
from mpp.stack.airflow_api import DAG_ID, KUBERNETES_MASTER, VARIABLE_DEFAULTS
from mpp.stack.cluster import image_present
from mpp.stack.cluster_config import HOST_GATEWAY, KAFKA_CLUSTER_PORT
from mpp.stack.deploy import Deployment
from mpp.stack.job_image import job_image_ref
from mpp.stores import milvus_client, neo4j_driver
from mpp.stores.campaigns import upsert_campaigns
from mpp.warehouse import TABLES
from mpp.warehouse.sqlite import SqliteWarehouse
from mpp.warehouse.sync import sync_warehouse
from tests.conftest import with_database, with_topics
from tests.e2e.pipeline import Pipeline, Replay, build_replay, isolated_run, log
from tests.forwarder import Cuttable

from .conftest import batch_namespace, kubectl

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(3600)]

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


# -- what the stores hold -----------------------------------------------------------------------


def milvus_rows(settings: Settings) -> dict[str, tuple[str, np.ndarray]]:
    client = milvus_client(settings)
    rows = client.query(
        settings.milvus.messages_collection,
        filter='message_id != ""',
        output_fields=["message_id", "user_id", "embedding"],
        limit=16_000,
    )
    return {
        r["message_id"]: (r["user_id"], np.asarray(r["embedding"], dtype=np.float32)) for r in rows
    }


def graph(settings: Settings, prefix: str) -> dict[str, tuple[Any, ...]]:
    """Each message of the run's users: its sender, properties and links, as one tuple."""
    with neo4j_driver(settings) as driver:
        records, _, _ = driver.execute_query(
            """
            MATCH (u:User)-[:SENT]->(m:Message) WHERE u.id STARTS WITH $prefix
            OPTIONAL MATCH (m)-[a:ABOUT]->(c:Campaign)
            WITH u, m, collect([c.id, a.source, a.score]) AS campaigns
            OPTIONAL MATCH (m)-[h:HAS_INTENT]->(i:Intent)
            RETURN u.id AS user, m.id AS id, m.ts AS ts, m.text AS text,
                   m.channel AS channel, m.model AS model, m.campaign_id AS campaign,
                   campaigns, collect([i.name, h.score]) AS intents
            """,
            prefix=prefix + "-",
        )
    return {
        r["id"]: (
            r["user"], r["ts"], r["text"], r["channel"], r["model"], r["campaign"],
            sorted(map(tuple, (c for c in r["campaigns"] if c[0] is not None))),
            sorted(map(tuple, (i for i in r["intents"] if i[0] is not None))),
        )
        for r in records
    }  # fmt: skip


# A message's links and intents are kept where their cosine score reaches a threshold; the two
# paths encode in batches of other sizes, so scores agree to about 1e-6, and a score this close
# to a threshold may fall on either side of it.
NEAR_THRESHOLD = 1e-3


def _links(links: list[Any], threshold: float) -> tuple[dict[tuple[str, ...], float], float]:
    return {tuple(map(str, link[:-1])): float(link[-1]) for link in links}, threshold


def differing_links(
    got: dict[str, tuple[Any, ...]], want: dict[str, tuple[Any, ...]]
) -> dict[str, set[tuple[str, ...]]]:
    """Asserts the two graphs hold the same messages, senders and properties, and the same
    links and intents with scores within 1e-4, except links and intents scored within
    NEAR_THRESHOLD of their threshold, which one side may lack; returns those, by message."""
    cfg = Settings().embedder
    assert sorted(got) == sorted(want)
    differing: dict[str, set[tuple[str, ...]]] = {}
    for message_id, (*props, campaigns, intents) in got.items():
        *want_props, want_campaigns, want_intents = want[message_id]
        assert props == want_props, message_id
        for (mine, threshold), (theirs, _) in (
            (_links(campaigns, cfg.campaign_link_threshold), _links(want_campaigns, 0)),
            (_links(intents, cfg.intent_threshold), _links(want_intents, 0)),
        ):
            for key in mine.keys() & theirs.keys():
                assert abs(mine[key] - theirs[key]) <= 1e-4, (message_id, key)
            for key in mine.keys() ^ theirs.keys():
                score = mine.get(key, theirs.get(key, 0.0))
                assert abs(score - threshold) <= NEAR_THRESHOLD, (message_id, key, score)
                differing.setdefault(message_id, set()).add(key)
    return differing


def assert_same_warehouse(
    got: dict[str, list[tuple[Any, ...]]],
    want: dict[str, list[tuple[Any, ...]]],
    differing: dict[str, set[tuple[str, ...]]],
) -> None:
    """Every warehouse table equal, but for what the links and intents found by
    differing_links decide: those messages' intents and campaigns, their users' top intents
    and campaigns, and the campaigns they name."""
    if not differing:
        assert got == want
        return
    names = {n: spec.column_names for n, spec in TABLES.items()}
    campaigns = {key[0] for keys in differing.values() for key in keys}
    facts = {r[0]: r for r in want["message_facts"]}
    users = {facts[m][names["message_facts"].index("user_id")] for m in differing}

    def kept(table: str, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        columns = names[table]
        out = []
        for row in rows:
            values = dict(zip(columns, row, strict=True))
            if table == "message_facts" and values["message_id"] in differing:
                values["intents"] = values["campaign_ids"] = "?"
            if table == "user_engagement" and values["user_id"] in users:
                values["top_intents"] = values["campaigns_engaged"] = "?"
            if table.startswith("campaign_") and values["campaign_id"] in campaigns:
                continue
            out.append(tuple(values.values()))
        return out

    for table in TABLES:
        assert kept(table, got[table]) == kept(table, want[table]), table


def clear_graph(prefix: str) -> None:
    with neo4j_driver(Settings()) as driver:
        driver.execute_query(
            """
            MATCH (u:User) WHERE u.id STARTS WITH $prefix
            OPTIONAL MATCH (u)-[:SENT]->(m:Message)
            DETACH DELETE u, m
            """,
            prefix=prefix + "-",
        )


def warehouse(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every warehouse table's rows, sorted (the sync's own bookkeeping is not a table)."""
    store = SqliteWarehouse(path)
    try:
        return {
            name: sorted(tuple(str(row[c]) for c in spec.column_names) for row in store.read(name))
            for name, spec in TABLES.items()
        }
    finally:
        store.close()


def snapshot(batch: Batch) -> dict[str, Any]:
    batch.writers.wait_drained(timeout_s=300)
    return {
        "milvus": {k: v[0] for k, v in milvus_rows(batch.writers.settings).items()},
        "graph": graph(batch.writers.settings, batch.writers.run_id),
        "warehouse": warehouse(batch.data_dir / "warehouse.sqlite"),
        "enriched_files": sorted(
            str(p.relative_to(batch.data_dir))
            for p in (batch.data_dir / "enriched-messages").rglob("*.parquet")
        ),
    }


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
