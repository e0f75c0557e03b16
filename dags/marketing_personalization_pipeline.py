"""marketing_personalization_pipeline: the platform's daily batch path on Kubernetes.

Four KubernetesPodOperator tasks, one pod each, all from the platform's job image:

0. ``erase_batch``: ``spark-submit .../mpp_jobs/erase.py`` rewrites the batch data folder (raw
   events, enriched and rejects Parquet, aggregates) and the warehouse without the users
   erased since (the erasure ledger in PostgreSQL): an erasure reaches the batch outputs by
   the next run at the latest (docs/security.md, "Erasure"). First, so that nothing below
   reads an erased user's rows;
1. ``embed_backfill``: ``spark-submit .../mpp_jobs/embed.py`` (started by
   ``python -m mpp_jobs.launch submit``) re-ingests the raw chat events of
   the run's data interval ``[data_interval_start, data_interval_end)`` (UTC days) with the
   stream's own validation and ids, embeds, tags and links them, writes enriched Parquet and
   rejects (idempotent by message_id) and produces the EnrichedMessages to the enriched topic,
   where the running writers upsert them into Milvus, Neo4j and the analytics facts;
2. ``aggregate``: ``spark-submit .../mpp_jobs/aggregate.py`` (the same way) recomputes the analytics
   aggregates from PostgreSQL's facts with Spark, compares them with the serving tables read
   in the same snapshot (the task fails on any difference) and replaces the warehouse's;
3. ``warehouse_sync``: ``mpp analytics sync`` carries the new facts, the aggregates and any
   pending erasure to the warehouse (BigQuery in production).

Every task can be re-run: each one rewrites only what is not already right.

Configuration, none of it read at import time (the file imports without a database, a
network or the project's code):

- Airflow Variables, rendered when a task runs: ``mpp_batch_image`` (the job image),
  ``mpp_batch_namespace``, ``mpp_spark_master`` (``local[*]``: Spark inside the task's pod;
  ``k8s://https://kubernetes.default.svc:443``: the task's pod is Spark's driver and starts
  executor pods from the same image in its namespace, ``jobs/mpp_jobs/launch.py``),
  ``mpp_spark_executors`` (2), ``mpp_spark_executor_cpu`` (each executor's CPU request, 1),
  ``mpp_spark_executor_memory`` (its JVM heap, 1g),
  ``mpp_batch_cpu`` and ``mpp_batch_memory`` (each pod's CPU request and memory request and
  limit: lower them for a small cluster), ``mpp_environment`` (the pods' ``MPP_ENVIRONMENT``,
  ``production``: the stores' passwords are required);
- environment variables of the scheduler, read when the file is parsed, for what the operator
  does not template: ``MPP_BATCH_SERVICE_ACCOUNT``, ``MPP_BATCH_ENV_SECRET`` (the Secret whose
  keys become the pods' ``MPP_*`` settings: Kafka, PostgreSQL, warehouse credentials; the
  chart's ``batch.enabled`` makes it and the account), and the defaults of the Variables:
  ``MPP_BATCH_IMAGE``, ``MPP_BATCH_NAMESPACE``, ``MPP_BATCH_CPU`` (2), ``MPP_BATCH_MEMORY`` (6Gi);
  ``MPP_BATCH_DATA_CLAIM`` (``mpp-batch-data``, the chart's ``batch.data``; empty: none), the
  PersistentVolumeClaim every pod (and every Spark executor) mounts at ``/data``: the raw
  events, the Parquet outputs, Spark's event log and, locally, the SQLite warehouse;
  ``MPP_BATCH_RETRY_DELAY_S`` (300: the first retry's delay, doubling up to 30 minutes);
- DAG params, per run (``conf`` of a triggered run): ``raw_events`` and ``enriched_output``
  (paths on the data volume by default, or object-store URLs where the image has the
  connector; ``{day}`` is replaced by the interval's first day), ``embed_mode`` (``new`` or
  ``replace``).

Every pod passes the ``restricted`` Pod Security Standard: user 10001 (the image's), no
privilege escalation, no capabilities, the runtime's seccomp profile, and a read-only root
filesystem with emptyDir volumes on ``/tmp`` (Spark's local dirs, HOME) and ``/var/lib/mpp``
(``MPP_STACK__DIR``, the working directory). Spark's executor pods are built the same way.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk import DAG, Param
from airflow.timetables.interval import CronDataIntervalTimetable
from kubernetes.client import models as k8s

DAG_ID = "marketing_personalization_pipeline"
JOBS_DIR = "/app/jobs/mpp_jobs"

IMAGE = os.environ.get("MPP_BATCH_IMAGE", "mpp-jobs:latest")
NAMESPACE = os.environ.get("MPP_BATCH_NAMESPACE", "mpp")
SERVICE_ACCOUNT = os.environ.get("MPP_BATCH_SERVICE_ACCOUNT", "mpp-batch")
ENV_SECRET = os.environ.get("MPP_BATCH_ENV_SECRET", "mpp-batch-env")
CPU = os.environ.get("MPP_BATCH_CPU", "2")
MEMORY = os.environ.get("MPP_BATCH_MEMORY", "6Gi")
DATA_CLAIM = os.environ.get("MPP_BATCH_DATA_CLAIM", "mpp-batch-data")
DATA_DIR = "/data"
RETRY_DELAY_S = float(os.environ.get("MPP_BATCH_RETRY_DELAY_S", "300"))

# Rendered at run time: a Variable changes the next run without touching this file.
IMAGE_T = "{{ var.value.get('mpp_batch_image', '" + IMAGE + "') }}"
NAMESPACE_T = "{{ var.value.get('mpp_batch_namespace', '" + NAMESPACE + "') }}"
MASTER_T = "{{ var.value.get('mpp_spark_master', 'local[*]') }}"
CPU_T = "{{ var.value.get('mpp_batch_cpu', '" + CPU + "') }}"
# production refuses to run without the stores' passwords; a local stack without them sets
# the Variable to development.
ENVIRONMENT_T = "{{ var.value.get('mpp_environment', 'production') }}"
MEMORY_T = "{{ var.value.get('mpp_batch_memory', '" + MEMORY + "') }}"
EXECUTORS_T = "{{ var.value.get('mpp_spark_executors', '2') }}"
EXECUTOR_CPU_T = "{{ var.value.get('mpp_spark_executor_cpu', '1') }}"
EXECUTOR_MEMORY_T = "{{ var.value.get('mpp_spark_executor_memory', '1g') }}"
FIRST_DAY = "{{ data_interval_start | ds }}"
END_DAY = "{{ data_interval_end | ds }}"


def _resources(cpu: str, memory: str) -> k8s.V1ResourceRequirements:
    return k8s.V1ResourceRequirements(
        requests={"cpu": cpu, "memory": memory}, limits={"memory": memory}
    )


# The restricted Pod Security Standard, and a read-only root: what the job image writes goes to
# the two emptyDir volumes below.
USER_ID = 10001  # the job image's user (jobs/Dockerfile)
RUNTIME_DEFAULT = k8s.V1SeccompProfile(type="RuntimeDefault")
POD_SECURITY = k8s.V1PodSecurityContext(
    run_as_non_root=True,
    run_as_user=USER_ID,
    run_as_group=USER_ID,
    fs_group=USER_ID,
    seccomp_profile=RUNTIME_DEFAULT,
)
CONTAINER_SECURITY = k8s.V1SecurityContext(
    run_as_non_root=True,
    run_as_user=USER_ID,
    allow_privilege_escalation=False,
    capabilities=k8s.V1Capabilities(drop=["ALL"]),
    read_only_root_filesystem=True,
    seccomp_profile=RUNTIME_DEFAULT,
)
SCRATCH = {"tmp": "/tmp", "work": "/var/lib/mpp"}  # noqa: S108 - an emptyDir, not the host's
VOLUMES = [k8s.V1Volume(name=name, empty_dir=k8s.V1EmptyDirVolumeSource()) for name in SCRATCH]
MOUNTS = [k8s.V1VolumeMount(name=name, mount_path=path) for name, path in SCRATCH.items()]
if DATA_CLAIM:
    VOLUMES.append(
        k8s.V1Volume(
            name="data",
            persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(claim_name=DATA_CLAIM),
        )
    )
    MOUNTS.append(k8s.V1VolumeMount(name="data", mount_path=DATA_DIR))

SPARK_LAUNCH = ["python", "-m", "mpp_jobs.launch"]


def _field(path: str) -> k8s.V1EnvVarSource:
    return k8s.V1EnvVarSource(field_ref=k8s.V1ObjectFieldSelector(field_path=path))


def _env(task_id: str) -> list[k8s.V1EnvVar]:
    """The pod's settings besides the Secret's: what Spark's launcher needs to be a driver on
    Kubernetes (jobs/mpp_jobs/launch.py), the environment, the JSON log format."""
    values = {
        "MPP_LOG_FORMAT": "json",
        "MPP_ENVIRONMENT": ENVIRONMENT_T,
        "MPP_TASK": task_id,
        "MPP_BATCH_ENV_SECRET": ENV_SECRET,
        "MPP_SPARK_IMAGE": IMAGE_T,
        "MPP_SPARK_EXECUTORS": EXECUTORS_T,
        "MPP_SPARK_EXECUTOR_CPU": EXECUTOR_CPU_T,
        "MPP_SPARK_EXECUTOR_MEMORY": EXECUTOR_MEMORY_T,
    }
    if DATA_CLAIM:
        values |= {"MPP_BATCH_DATA_CLAIM": DATA_CLAIM, "MPP_BATCH_DATA_DIR": DATA_DIR}
    fields = {
        "MPP_POD_NAME": "metadata.name",
        "MPP_POD_NAMESPACE": "metadata.namespace",
        "MPP_POD_IP": "status.podIP",
    }
    return [k8s.V1EnvVar(name=k, value=v) for k, v in values.items()] + [
        k8s.V1EnvVar(name=k, value_from=_field(path)) for k, path in fields.items()
    ]


def _spark_submit(job: str, *job_args: str) -> list[str]:
    """The launcher's arguments for one of the jobs in the image (its spark-submit)."""
    return ["submit", "--master", MASTER_T, job, *job_args]


def _pod(
    task_id: str, cmds: list[str], arguments: list[str], **kwargs: object
) -> KubernetesPodOperator:
    return KubernetesPodOperator(
        task_id=task_id,
        name=f"mpp-{task_id.replace('_', '-')}",
        namespace=NAMESPACE_T,
        image=IMAGE_T,
        cmds=cmds,
        arguments=arguments,
        service_account_name=SERVICE_ACCOUNT,
        env_from=[
            k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=ENV_SECRET, optional=True))
        ],
        env_vars=_env(task_id),
        container_resources=_resources(CPU_T, MEMORY_T),
        security_context=POD_SECURITY,
        container_security_context=CONTAINER_SECURITY,
        volumes=VOLUMES,
        volume_mounts=MOUNTS,
        labels={"app.kubernetes.io/part-of": "mpp", "mpp/task": task_id},
        get_logs=True,
        # A failed pod stays for `kubectl logs`; a successful one goes.
        on_finish_action="delete_succeeded_pod",
        startup_timeout_seconds=600,
        **kwargs,  # type: ignore[arg-type]
    )


with DAG(
    dag_id=DAG_ID,
    description="Daily batch: erase the erased users' batch outputs, re-embed the day's chat "
    "events, recompute and check the analytics aggregates, sync the warehouse",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    # The earliest day a run may cover: Airflow gives a run no task instance for a day before
    # its tasks' start date, and backfills of older chat history are what embed_backfill is
    # for. With catchup off, it schedules nothing by itself.
    start_date=pendulum.datetime(2015, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={
        "owner": "mpp",
        "retries": 2,
        "retry_delay": timedelta(seconds=RETRY_DELAY_S),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=30),
        "execution_timeout": timedelta(hours=3),
    },
    params={
        "raw_events": Param(
            DATA_DIR + "/raw/conversations/day={day}/",
            type="string",
            description="raw chat events of the interval (JSON Lines or Parquet)",
        ),
        "enriched_output": Param(
            DATA_DIR + "/enriched-messages/",
            type="string",
            description="Parquet output of the embedding job (enriched/ and rejects/)",
        ),
        "embed_mode": Param("new", enum=["new", "replace"]),
    },
    tags=["mpp", "spark", "batch"],
    doc_md=__doc__,
) as dag:
    erase_batch = _pod(
        "erase_batch", SPARK_LAUNCH, _spark_submit("erase", "--data", DATA_DIR, "--warehouse")
    )
    embed_backfill = _pod(
        "embed_backfill",
        SPARK_LAUNCH,
        _spark_submit(
            "embed",
            "--input",
            "{{ params.raw_events.replace('{day}', data_interval_start | ds) }}",
            "--output",
            "{{ params.enriched_output }}",
            "--from",
            FIRST_DAY,
            "--to",
            END_DAY,
            "--mode",
            "{{ params.embed_mode }}",
            "--campaigns",
            "postgres",
            "--kafka",
        ),
    )
    aggregate = _pod(
        "aggregate",
        SPARK_LAUNCH,
        _spark_submit(
            "aggregate",
            "--facts",
            "postgres",
            "--compare-postgres",
            "--write-warehouse",
            "--logical-date",
            "{{ logical_date | ds }}",
        ),
    )
    warehouse_sync = _pod("warehouse_sync", ["mpp"], ["analytics", "sync"], retries=3)

    erase_batch >> embed_backfill >> aggregate >> warehouse_sync
