"""How the DAG's pods start Spark: ``submit`` in the task's pod, ``executor`` in Spark's pods.

``python -m mpp_jobs.launch submit --master MASTER JOB [JOB ARGS...]`` is the task pod's
command. It execs ``spark-submit`` on ``jobs/mpp_jobs/JOB.py``:

- with a ``local[...]`` master, Spark runs inside the task's pod (the default);
- with ``k8s://https://...``, the task's pod is the driver (client mode) and Spark's own
  Kubernetes scheduler starts ``MPP_SPARK_EXECUTORS`` executor pods from the same image in the
  pod's namespace, owned by the driver pod (they go when it goes). The executors run
  ``python -m mpp_jobs.launch executor`` (the pod template written here), as restricted as the
  driver: non-root, read-only root, no capabilities, the runtime's seccomp profile, the
  driver's Secret of ``MPP_*`` settings, the batch data volume when there is one.

What the driver's pod tells it, by environment (the DAG sets these):

``MPP_POD_NAME``, ``MPP_POD_NAMESPACE``, ``MPP_POD_IP`` (the downward API), ``MPP_SPARK_IMAGE``
(the executors' image: the task's own), ``MPP_SPARK_EXECUTORS`` (2),
``MPP_SPARK_EXECUTOR_CPU`` (each executor's CPU request, 1), ``MPP_SPARK_EXECUTOR_MEMORY``
(JVM heap, 1g) and ``MPP_SPARK_EXECUTOR_OVERHEAD`` (the Python workers and the model, 1536m),
``MPP_BATCH_ENV_SECRET`` (the Secret of settings), ``MPP_BATCH_DATA_CLAIM`` and
``MPP_BATCH_DATA_DIR`` (the data volume and where it is mounted), and ``MPP_TASK`` (a label).
With ``MPP_BATCH_DATA_DIR`` set, Spark's event log goes to ``<dir>/spark-events``.

Nothing here imports Spark: ``submit`` builds an argument list, ``executor`` a ``java`` one.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

JOBS = ("erase", "embed", "aggregate")
JOBS_DIR = Path(__file__).resolve().parent
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
TEMPLATE_PATH = "/tmp/mpp-spark-executor.json"  # noqa: S108 - the pod's emptyDir
USER_ID = 10001  # the job image's user (jobs/Dockerfile)
# Fixed ports on the driver pod: the executors connect back to them on its IP.
DRIVER_PORT, BLOCK_MANAGER_PORT = 7078, 7079
# The executors' scratch on a read-only root: /var/lib/mpp here; /tmp is Spark's own local
# dir (the image's SPARK_LOCAL_DIRS), an emptyDir that Spark mounts there itself.
SCRATCH = {"work": "/var/lib/mpp"}
EXECUTOR_DEFAULTS = {
    "MPP_SPARK_EXECUTORS": "2",
    "MPP_SPARK_EXECUTOR_CPU": "1",
    "MPP_SPARK_EXECUTOR_MEMORY": "1g",
    "MPP_SPARK_EXECUTOR_OVERHEAD": "1536m",
}


class LaunchError(ValueError):
    """A setting the launch needs is missing or wrong; the message names it."""


def _need(env: Mapping[str, str], name: str, why: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise LaunchError(f"{name} is not set: {why}")
    return value


def _setting(env: Mapping[str, str], name: str) -> str:
    return env.get(name, "").strip() or EXECUTOR_DEFAULTS[name]


def is_kubernetes(master: str) -> bool:
    return master.startswith("k8s://")


def common_conf(env: Mapping[str, str]) -> dict[str, str]:
    """Spark settings of every run: UTC, no UI, the event log on the data volume."""
    conf = {"spark.sql.session.timeZone": "UTC", "spark.ui.enabled": "false"}
    data_dir = env.get("MPP_BATCH_DATA_DIR", "").strip()
    if data_dir:
        conf["spark.eventLog.enabled"] = "true"
        conf["spark.eventLog.dir"] = f"file://{data_dir.rstrip('/')}/spark-events"
    return conf


def kubernetes_conf(env: Mapping[str, str]) -> dict[str, str]:
    """Client mode from inside the task's pod: this pod is the driver, executors are pods."""
    why = "the DAG sets it from the downward API"
    executors = _setting(env, "MPP_SPARK_EXECUTORS")
    pod_ip = _need(env, "MPP_POD_IP", why)
    if not executors.isdigit() or int(executors) < 1:
        raise LaunchError(f"MPP_SPARK_EXECUTORS={executors!r}: a whole number of executors >= 1")
    return {
        "spark.submit.deployMode": "client",
        "spark.kubernetes.namespace": _need(env, "MPP_POD_NAMESPACE", why),
        # Executors are owned by the driver pod: deleting it deletes them.
        "spark.kubernetes.driver.pod.name": _need(env, "MPP_POD_NAME", why),
        # Executors reach the driver at the address it binds (Spark 4 hands them the bind
        # address when spark.kubernetes.executor.useDriverPodIP is on): the pod's IP, not
        # 0.0.0.0.
        "spark.driver.host": pod_ip,
        "spark.driver.bindAddress": pod_ip,
        "spark.driver.port": str(DRIVER_PORT),
        "spark.driver.blockManager.port": str(BLOCK_MANAGER_PORT),
        "spark.kubernetes.container.image": _need(
            env, "MPP_SPARK_IMAGE", "the executors' image (the task's own)"
        ),
        "spark.kubernetes.container.image.pullPolicy": "IfNotPresent",
        "spark.kubernetes.authenticate.caCertFile": f"{SERVICE_ACCOUNT_DIR}/ca.crt",
        "spark.kubernetes.authenticate.oauthTokenFile": f"{SERVICE_ACCOUNT_DIR}/token",
        "spark.kubernetes.executor.podTemplateFile": TEMPLATE_PATH,
        "spark.kubernetes.executor.podTemplateContainerName": "executor",
        "spark.executor.instances": executors,
        "spark.executor.cores": "1",
        "spark.kubernetes.executor.request.cores": _setting(env, "MPP_SPARK_EXECUTOR_CPU"),
        "spark.executor.memory": _setting(env, "MPP_SPARK_EXECUTOR_MEMORY"),
        "spark.executor.memoryOverhead": _setting(env, "MPP_SPARK_EXECUTOR_OVERHEAD"),
        # The job starts once every executor registered (or after two minutes with those that
        # did), so the work is spread over all of them.
        "spark.scheduler.minRegisteredResourcesRatio": "1.0",
        "spark.scheduler.maxRegisteredResourcesWaitingTime": "120s",
        "spark.kubernetes.executor.deleteOnTermination": "true",
    }


def executor_pod_template(env: Mapping[str, str]) -> dict[str, Any]:
    """The executors' pod: Spark adds the image, resources, its own env, ports and owner."""
    runtime_default = {"type": "RuntimeDefault"}
    volumes: list[dict[str, Any]] = [{"name": name, "emptyDir": {}} for name in SCRATCH]
    mounts = [{"name": name, "mountPath": path} for name, path in SCRATCH.items()]
    claim = env.get("MPP_BATCH_DATA_CLAIM", "").strip()
    if claim:
        data_dir = _need(env, "MPP_BATCH_DATA_DIR", "where the data volume is mounted")
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": claim}})
        mounts.append({"name": "data", "mountPath": data_dir})
    container: dict[str, Any] = {
        "name": "executor",
        "command": [sys.executable, "-m", "mpp_jobs.launch"],  # Spark appends "executor"
        "workingDir": SCRATCH["work"],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": USER_ID,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "seccompProfile": runtime_default,
        },
        "volumeMounts": mounts,
        "env": [
            {"name": name, "value": env[name]}
            for name in ("MPP_ENVIRONMENT", "MPP_LOG_FORMAT", "MPP_LOG_LEVEL")
            if env.get(name)
        ],
    }
    secret = env.get("MPP_BATCH_ENV_SECRET", "").strip()
    if secret:
        container["envFrom"] = [{"secretRef": {"name": secret, "optional": True}}]
    labels = {
        "app.kubernetes.io/part-of": "mpp",
        "app.kubernetes.io/component": "batch",
        "mpp/spark-role": "executor",
    }
    if env.get("MPP_TASK"):
        labels["mpp/task"] = env["MPP_TASK"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"labels": labels},
        "spec": {
            # Executors never call the API: no token in them.
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": USER_ID,
                "runAsGroup": USER_ID,
                "fsGroup": USER_ID,
                "seccompProfile": runtime_default,
            },
            "volumes": volumes,
            "containers": [container],
        },
    }


def submit_argv(
    master: str, job: str, job_args: Sequence[str], env: Mapping[str, str]
) -> list[str]:
    """spark-submit's argument list for ``job`` (its script in this package)."""
    if job not in JOBS:
        raise LaunchError(f"unknown job {job!r}: one of {', '.join(JOBS)}")
    conf = common_conf(env)
    if is_kubernetes(master):
        conf |= kubernetes_conf(env)
    elif not master.startswith("local"):
        raise LaunchError(
            f"--master {master!r}: local[N] or local[*] (Spark in this pod), or "
            "k8s://https://HOST:PORT (executor pods in this namespace)"
        )
    argv = ["spark-submit", "--master", master]
    for key, value in conf.items():
        argv += ["--conf", f"{key}={value}"]
    return [*argv, str(JOBS_DIR / f"{job}.py"), *job_args]


def executor_argv(env: Mapping[str, str]) -> list[str]:
    """The JVM of one executor, from what Spark put in its pod's environment."""
    why = "Spark's Kubernetes scheduler sets it in the executor's pod"
    spark_home = _need(env, "SPARK_HOME", "the image's Spark (jobs/Dockerfile)")
    java_home = _need(env, "JAVA_HOME", "the image's Java (jobs/Dockerfile)")
    memory = _need(env, "SPARK_EXECUTOR_MEMORY", why)
    classpath = [f"{spark_home}/jars/*"]
    if env.get("SPARK_CONF_DIR"):
        classpath.insert(0, env["SPARK_CONF_DIR"])
    if env.get("SPARK_CLASSPATH"):
        classpath.append(env["SPARK_CLASSPATH"])
    # SPARK_JAVA_OPT_0, _1, ...: the executor's JVM options, in their order.
    options = sorted(
        (int(name.rsplit("_", 1)[1]), value)
        for name, value in env.items()
        if name.startswith("SPARK_JAVA_OPT_") and name.rsplit("_", 1)[1].isdigit()
    )
    return [
        f"{java_home}/bin/java",
        *(value for _, value in options),
        f"-Xms{memory}",
        f"-Xmx{memory}",
        "-cp",
        ":".join(classpath),
        "org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend",
        "--driver-url",
        _need(env, "SPARK_DRIVER_URL", why),
        "--executor-id",
        _need(env, "SPARK_EXECUTOR_ID", why),
        "--cores",
        _need(env, "SPARK_EXECUTOR_CORES", why),
        "--app-id",
        _need(env, "SPARK_APPLICATION_ID", why),
        "--hostname",
        _need(env, "SPARK_EXECUTOR_POD_IP", why),
        "--resourceProfileId",
        env.get("SPARK_RESOURCE_PROFILE_ID", "0"),
        "--podName",
        _need(env, "SPARK_EXECUTOR_POD_NAME", why),
    ]


def _usage() -> str:
    return (
        "usage: python -m mpp_jobs.launch submit --master MASTER JOB [ARGS...]\n"
        "       python -m mpp_jobs.launch executor   (in an executor pod, from Spark)"
    )


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    environ = dict(os.environ if env is None else env)
    try:
        if args[:1] == ["executor"]:
            command = executor_argv(environ)
        elif args[:2] == ["submit", "--master"] and len(args) >= 4:
            master, job, job_args = args[2], args[3], args[4:]
            command = submit_argv(master, job, job_args, environ)
            if is_kubernetes(master):
                Path(TEMPLATE_PATH).write_text(json.dumps(executor_pod_template(environ)))
            data_dir = environ.get("MPP_BATCH_DATA_DIR", "").strip()
            if data_dir:
                Path(data_dir, "spark-events").mkdir(parents=True, exist_ok=True)
        else:
            sys.stderr.write(_usage() + "\n")
            return 2
    except LaunchError as exc:
        sys.stderr.write(f"mpp_jobs.launch: {exc}\n")
        return 2
    sys.stdout.write(json.dumps({"event": "launch", "argv": command}) + "\n")
    sys.stdout.flush()
    os.execvp(command[0], command)  # noqa: S606 - the argument list built above
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
