"""jobs/mpp_jobs/launch.py: the spark-submit command of the DAG's Spark tasks, the executor pod
template Spark's Kubernetes scheduler starts from, and the executor's JVM command line.
(tests/cluster/test_dag_run.py runs them for real.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "jobs"))

from mpp_jobs import launch

DRIVER = {
    "MPP_POD_NAME": "mpp-embed-backfill-abc123",
    "MPP_POD_NAMESPACE": "batch",
    "MPP_POD_IP": "10.244.0.17",
    "MPP_SPARK_IMAGE": "localhost/mpp/jobs:t1",
    "MPP_BATCH_ENV_SECRET": "mpp-batch-env",
    "MPP_BATCH_DATA_CLAIM": "mpp-batch-data",
    "MPP_BATCH_DATA_DIR": "/data",
    "MPP_ENVIRONMENT": "development",
    "MPP_TASK": "embed_backfill",
}


def confs(argv: list[str]) -> dict[str, str]:
    pairs = [argv[i + 1] for i, a in enumerate(argv) if a == "--conf"]
    return dict(p.split("=", 1) for p in pairs)


def test_local_master_runs_spark_in_the_pod() -> None:
    argv = launch.submit_argv("local[*]", "embed", ["--input", "/data/raw"], {})
    assert argv[:3] == ["spark-submit", "--master", "local[*]"]
    assert argv[-3:] == [str(launch.JOBS_DIR / "embed.py"), "--input", "/data/raw"]
    conf = confs(argv)
    assert conf["spark.sql.session.timeZone"] == "UTC"
    assert not any(k.startswith("spark.kubernetes.") for k in conf)
    assert "spark.eventLog.enabled" not in conf  # no data volume, no event log


def test_kubernetes_master_makes_the_pod_a_client_mode_driver() -> None:
    master = "k8s://https://kubernetes.default.svc:443"
    env = DRIVER | {"MPP_SPARK_EXECUTORS": "3", "MPP_SPARK_EXECUTOR_CPU": "250m"}
    argv = launch.submit_argv(master, "aggregate", ["--facts", "postgres"], env)
    conf = confs(argv)
    assert conf["spark.submit.deployMode"] == "client"
    assert conf["spark.kubernetes.namespace"] == "batch"
    # Executors are owned by the driver pod and connect back to its IP on fixed ports.
    assert conf["spark.kubernetes.driver.pod.name"] == "mpp-embed-backfill-abc123"
    assert conf["spark.driver.host"] == "10.244.0.17" == conf["spark.driver.bindAddress"]
    assert conf["spark.driver.port"] == "7078"
    assert conf["spark.kubernetes.container.image"] == "localhost/mpp/jobs:t1"
    assert conf["spark.executor.instances"] == "3"
    assert conf["spark.kubernetes.executor.request.cores"] == "250m"
    assert conf["spark.executor.memory"] == "1g"  # the default
    assert conf["spark.kubernetes.executor.podTemplateFile"] == launch.TEMPLATE_PATH
    assert conf["spark.eventLog.dir"] == "file:///data/spark-events"
    assert argv[-3:] == [str(launch.JOBS_DIR / "aggregate.py"), "--facts", "postgres"]


@pytest.mark.parametrize("missing", ["MPP_POD_IP", "MPP_POD_NAME", "MPP_SPARK_IMAGE"])
def test_a_missing_driver_setting_is_named(missing: str) -> None:
    env = {k: v for k, v in DRIVER.items() if k != missing}
    with pytest.raises(launch.LaunchError, match=missing):
        launch.submit_argv("k8s://https://kubernetes.default.svc:443", "embed", [], env)


def test_bad_masters_jobs_and_executor_counts_are_refused() -> None:
    with pytest.raises(launch.LaunchError, match="local\\[N\\]"):
        launch.submit_argv("spark://somewhere:7077", "embed", [], DRIVER)
    with pytest.raises(launch.LaunchError, match="unknown job 'train'"):
        launch.submit_argv("local[2]", "train", [], DRIVER)
    with pytest.raises(launch.LaunchError, match="MPP_SPARK_EXECUTORS"):
        launch.submit_argv(
            "k8s://https://k:443", "embed", [], DRIVER | {"MPP_SPARK_EXECUTORS": "0"}
        )
    assert launch.main(["submit", "--master", "local[1]", "train"], DRIVER) == 2
    assert launch.main(["nonsense"], DRIVER) == 2


def test_the_executor_pod_is_restricted_and_shares_the_drivers_settings_and_data() -> None:
    pod = launch.executor_pod_template(DRIVER)
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = spec["containers"]
    assert container["name"] == "executor"
    assert container["command"][1:] == ["-m", "mpp_jobs.launch"]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["readOnlyRootFilesystem"] is True
    assert container["envFrom"] == [{"secretRef": {"name": "mpp-batch-env", "optional": True}}]
    assert {"name": "MPP_ENVIRONMENT", "value": "development"} in container["env"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    # /tmp is not the template's: Spark mounts its local dir (SPARK_LOCAL_DIRS=/tmp) there.
    assert mounts == {"/var/lib/mpp": "work", "/data": "data"}
    claims = [v["persistentVolumeClaim"] for v in spec["volumes"] if "persistentVolumeClaim" in v]
    assert claims == [{"claimName": "mpp-batch-data"}]
    assert "hostPath" not in str(spec)
    assert pod["metadata"]["labels"]["mpp/spark-role"] == "executor"
    assert pod["metadata"]["labels"]["mpp/task"] == "embed_backfill"
    # Without a data claim or a Secret: only the scratch volumes.
    bare = launch.executor_pod_template({})["spec"]
    assert [v["name"] for v in bare["volumes"]] == ["work"]
    assert "envFrom" not in bare["containers"][0]


def test_the_executor_jvm_is_built_from_sparks_environment() -> None:
    env = {
        "SPARK_HOME": "/opt/spark",
        "JAVA_HOME": "/usr/lib/jvm/java",
        "SPARK_EXECUTOR_MEMORY": "1024m",
        "SPARK_DRIVER_URL": "spark://CoarseGrainedScheduler@10.244.0.17:7078",
        "SPARK_EXECUTOR_ID": "2",
        "SPARK_EXECUTOR_CORES": "1",
        "SPARK_APPLICATION_ID": "spark-app-1",
        "SPARK_EXECUTOR_POD_IP": "10.244.0.21",
        "SPARK_EXECUTOR_POD_NAME": "mpp-batch-embed-exec-2",
        "SPARK_RESOURCE_PROFILE_ID": "0",
        "SPARK_CONF_DIR": "/opt/spark/conf",
        # Eleven options: 10 must come after 9, not after 1.
        **{f"SPARK_JAVA_OPT_{i}": f"-Dopt{i}=x" for i in range(11)},
    }
    argv = launch.executor_argv(env)
    assert argv[0] == "/usr/lib/jvm/java/bin/java"
    assert argv[1:12] == [f"-Dopt{i}=x" for i in range(11)]
    assert argv[12:14] == ["-Xms1024m", "-Xmx1024m"]
    assert argv[15] == "/opt/spark/conf:/opt/spark/jars/*"
    assert argv[16] == "org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend"
    flags = dict(zip(argv[17::2], argv[18::2], strict=True))
    assert flags == {
        "--driver-url": "spark://CoarseGrainedScheduler@10.244.0.17:7078",
        "--executor-id": "2",
        "--cores": "1",
        "--app-id": "spark-app-1",
        "--hostname": "10.244.0.21",
        "--resourceProfileId": "0",
        "--podName": "mpp-batch-embed-exec-2",
    }
    del env["SPARK_DRIVER_URL"]
    with pytest.raises(launch.LaunchError, match="SPARK_DRIVER_URL"):
        launch.executor_argv(env)
