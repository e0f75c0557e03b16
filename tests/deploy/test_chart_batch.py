"""The chart's batch objects (batch.enabled): what the Airflow DAG's pods need in the namespace.

Their names are the DAG's defaults (read from dags/marketing_personalization_pipeline.py, not
copied), the Role grants what Spark's Kubernetes scheduler does with its executors, and the
Secret carries exactly the settings the services get from the ConfigMap and the Secret.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mpp.config import Settings
from tests.deploy.conftest import CHART, CI_VALUES, DEFAULTS, FULLNAME, REPO, Rendered, run_helm

pytestmark = pytest.mark.timeout(1800)  # the first run builds helm (see conftest)

BATCH = ("batch.enabled=true",)
# What a Spark driver does in its namespace (Spark's running-on-kubernetes RBAC: executor
# pods, the driver's Service, its ConfigMaps, on-demand PVCs; list/watch/deletecollection by
# label, owner references by patch).
SPARK_RESOURCES = ("pods", "services", "configmaps", "persistentvolumeclaims")
SPARK_VERBS = ("get", "list", "watch", "create", "delete", "deletecollection", "patch")


def dag_default(variable: str) -> str:
    """The default the DAG gives ``os.environ.get(variable, default)``."""
    tree = ast.parse((REPO / "dags" / "marketing_personalization_pipeline.py").read_text())
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and len(node.args) == 2
            and isinstance(node.args[0], ast.Constant)
            and node.args[0].value == variable
            and isinstance(node.args[1], ast.Constant)
        ):
            return str(node.args[1].value)
    raise AssertionError(f"the DAG reads no {variable}")


@pytest.fixture(scope="module")
def batch_render(render: Callable[..., Rendered]) -> Rendered:
    return render("secrets-values.yaml", set_values=BATCH)


def secret_env(rendered: Rendered, name: str) -> dict[str, str]:
    """A Secret's keys as the API server stores them: data, then stringData over it."""
    secret = rendered.get("Secret", name)
    data = rendered.secret_data(name)
    return {**data, **{k: str(v) for k, v in (secret.get("stringData") or {}).items()}}


def batch_objects(rendered: Rendered) -> list[dict[str, Any]]:
    return [
        d
        for d in rendered.docs
        if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "batch"
    ]


def test_nothing_batch_by_default(default_render: Rendered) -> None:
    assert batch_objects(default_render) == []
    assert default_render.find("ServiceAccount", dag_default("MPP_BATCH_SERVICE_ACCOUNT")) is None


def test_lint_is_clean_with_batch(helm: Path) -> None:
    result = run_helm(
        helm, "lint", "--strict", str(CHART), "-f", str(CI_VALUES / DEFAULTS), "--set", BATCH[0]
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dags_account_is_bound_to_a_role_for_spark(batch_render: Rendered) -> None:
    name = dag_default("MPP_BATCH_SERVICE_ACCOUNT")
    account = batch_render.get("ServiceAccount", name)
    # A Spark driver (spark.master k8s://) calls the API with the account's token.
    assert account.get("automountServiceAccountToken") is True
    binding = batch_render.get("RoleBinding", name)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": name,
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": "mpp"}]
    role = batch_render.get("Role", name)
    granted: dict[str, set[str]] = {}
    for rule in role["rules"]:
        assert rule["apiGroups"] == [""], "only the core API group"
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        for resource in rule["resources"]:
            granted.setdefault(resource, set()).update(rule["verbs"])
    assert set(granted) == set(SPARK_RESOURCES), "nothing beyond what Spark uses"
    for resource in SPARK_RESOURCES:
        assert set(SPARK_VERBS) <= granted[resource], resource
    # Namespaced only: no ClusterRole, and no secrets (the pods read theirs through envFrom).
    assert batch_render.of_kind("ClusterRole") == []
    assert "secrets" not in granted


def test_the_env_secret_carries_the_services_settings(
    batch_render: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = secret_env(batch_render, dag_default("MPP_BATCH_ENV_SECRET"))
    config = batch_render.configmap_data()
    secrets = batch_render.secret_data()
    assert secrets, "secrets-values.yaml sets passwords"
    # The jobs derive message ids: the ids keys, not the API keys (the batch has no door).
    ids = {k: v for k, v in batch_render.keys_data().items() if k.startswith("MPP_IDS__")}
    assert set(ids) == {"MPP_IDS__HMAC_KEY", "MPP_IDS__PREVIOUS_HMAC_KEYS"}
    assert env == {**config, **secrets, **ids}
    # The settings load as the platform's own (names and values lib/mpp/config/ accepts).
    for name in list(Settings.model_fields):
        monkeypatch.delenv(f"MPP_{name.upper()}", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.postgres.host == config["MPP_POSTGRES__HOST"]
    assert settings.postgres.password is not None
    assert settings.ids.hmac_key.get_secret_value() == ids["MPP_IDS__HMAC_KEY"]


def test_names_and_batch_settings_are_configurable(render: Callable[..., Rendered]) -> None:
    rendered = render(
        set_values=(
            *BATCH,
            "batch.serviceAccount.name=spark",
            "batch.envSecretName=spark-env",
            "batch.extraEnv.MPP_LOG_LEVEL=DEBUG",
            "config.logLevel=INFO",
        )
    )
    assert rendered.get("RoleBinding", "spark")["subjects"][0]["name"] == "spark"
    assert rendered.get("Role", "spark")
    env = secret_env(rendered, "spark-env")
    assert env["MPP_LOG_LEVEL"] == "DEBUG"
    assert rendered.configmap_data()["MPP_LOG_LEVEL"] == "INFO", "the services keep theirs"
    # No store passwords set: the Secret has the settings (and the default ids key) only.
    assert not any(key.endswith("PASSWORD") for key in env)
    assert rendered.get("Secret", f"{FULLNAME}-secrets")


def test_the_data_claim_is_the_one_the_dags_pods_mount(batch_render: Rendered) -> None:
    """batch.data: the claim the DAG mounts at /data (MPP_BATCH_DATA_CLAIM), of the cluster's
    default storage class, shared by a driver and its executors (ReadWriteMany)."""
    claim = batch_render.get("PersistentVolumeClaim", dag_default("MPP_BATCH_DATA_CLAIM"))
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert "storageClassName" not in claim["spec"]  # the cluster's default class
    assert batch_render.of_kind("PersistentVolume") == []


def test_a_host_folder_becomes_a_volume_bound_to_the_claim_only(
    render: Callable[..., Rendered],
) -> None:
    rendered = render(
        set_values=(
            *BATCH,
            "batch.data.hostPath=/srv/mpp-batch",
            "batch.data.size=5Gi",
            "batch.data.accessModes={ReadWriteOnce}",
        )
    )
    (volume,) = rendered.of_kind("PersistentVolume")
    claim = rendered.get("PersistentVolumeClaim", "mpp-batch-data")
    assert volume["metadata"]["name"] == "mpp-mpp-batch-data"  # <namespace>-<claim>
    assert volume["spec"]["hostPath"] == {"path": "/srv/mpp-batch", "type": "Directory"}
    assert volume["spec"]["claimRef"] == {"namespace": "mpp", "name": "mpp-batch-data"}
    assert volume["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert volume["spec"]["capacity"] == {"storage": "5Gi"}
    assert claim["spec"]["volumeName"] == volume["metadata"]["name"]
    assert claim["spec"]["storageClassName"] == "" == volume["spec"]["storageClassName"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"] == volume["spec"]["accessModes"]
    # Off: no claim (bring your own, named by MPP_BATCH_DATA_CLAIM).
    without = render(set_values=(*BATCH, "batch.data.enabled=false"))
    assert without.of_kind("PersistentVolumeClaim") == []


@pytest.mark.parametrize(
    ("assignment", "named"),
    [
        ("batch.enable=true", "enable"),
        ("batch.serviceAccount.name=Spark_Driver", "name"),
        ("batch.extraEnv.LOG_LEVEL=DEBUG", "LOG_LEVEL"),
        ("batch.data.hostPath=relative/folder", "hostPath"),
        ("batch.data.size=lots", "size"),
    ],
)
def test_schema_refuses_a_wrong_batch_value(helm: Path, assignment: str, named: str) -> None:
    result = run_helm(
        helm, "template", "r", str(CHART), "-f", str(CI_VALUES / DEFAULTS), "--set", assignment
    )
    assert result.returncode != 0
    assert named in result.stderr, result.stderr
