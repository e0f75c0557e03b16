"""Fixtures of the cluster tests: one set of topics, database and campaign catalog per module,
shared by its tests (one Helm release serves them all), and the chart's batch objects in a
namespace of a test's own."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from mpp.catalog import default_campaigns_path, parse_campaigns
from mpp.config import Settings
from mpp.stack.deploy import JOB_USER, Deployment, helm_binary
from mpp.stores.campaigns import upsert_campaigns
from tests.conftest import with_database, with_topics


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="module")
def module_unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="module")
def database_settings_module(stack_settings: Settings, module_unique: str) -> Iterator[Settings]:
    """Topics and a migrated database of the module's own, with the default campaigns."""
    with with_database(with_topics(stack_settings, module_unique), module_unique) as settings:
        with psycopg.connect(settings.postgres.conninfo(), autocommit=True) as conn:
            upsert_campaigns(conn, parse_campaigns(default_campaigns_path()))
        yield settings


def isolated_release(settings: Settings, unique: str) -> tuple[Settings, dict[str, Any]]:
    """``settings`` (the module's topics and database) with consumer groups and Milvus
    collections of the module's own, and the chart values that give a release's pods the same,
    so that the release shares nothing with the other tests."""
    topics = settings.kafka.topics
    group_prefix = f"k8s-{unique}"
    milvus = settings.milvus.model_copy(
        update={
            "messages_collection": f"messages_k8s_{unique}",
            "campaigns_collection": f"campaigns_k8s_{unique}",
        }
    )
    kafka = settings.kafka.model_copy(update={"group_prefix": group_prefix})
    settings = settings.model_copy(update={"milvus": milvus, "kafka": kafka})
    overrides = {
        "kafka": {"groupPrefix": group_prefix},
        "postgres": {"database": settings.postgres.database},
        "config": {
            "extraEnv": {
                **{
                    f"MPP_KAFKA__TOPICS__{name.upper()}": getattr(topics, name)
                    for name in ("raw", "validated", "enriched", "dlq", "feedback", "erasure")
                },
                "MPP_MILVUS__MESSAGES_COLLECTION": milvus.messages_collection,
                "MPP_MILVUS__CAMPAIGNS_COLLECTION": milvus.campaigns_collection,
            }
        },
    }
    return settings, overrides


def kubectl(
    deployment: Deployment, *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """kubectl in the deployment's namespace; with ``check``, a failure fails the test."""
    result = deployment.kubectl_with_input(stdin or "", "-n", deployment.namespace, *args)
    if check:
        assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return result


@contextmanager
def batch_namespace(
    settings: Settings, prefix: str, batch_env: Mapping[str, str], data_dir: Path
) -> Iterator[Deployment]:
    """A restricted namespace holding the chart's batch objects only (no release), applied for
    real: ServiceAccount, Role, Secret (the platform's settings, then ``batch_env``), and the
    data claim bound to a PersistentVolume on ``data_dir`` (made, and given to the job
    image's user). The namespace and the volume are deleted afterwards; the folder is not."""
    deployment = Deployment(settings, namespace=f"{prefix}-{uuid.uuid4().hex[:8]}")
    deployment.require_cluster()
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chown(data_dir, JOB_USER, JOB_USER)
    deployment.ensure_namespace()
    volume = f"{deployment.namespace}-mpp-batch-data"
    try:
        batch = {"enabled": True, "extraEnv": dict(batch_env), "data": {"hostPath": str(data_dir)}}
        values = deployment.values("dry-run") | {"batch": batch}
        rendered = subprocess.run(
            [
                str(helm_binary()), "template", "mpp", str(deployment.chart),
                "--namespace", deployment.namespace,
                "--show-only", "templates/batch.yaml", "-f", "-",
            ],
            input=yaml.safe_dump(values),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout  # fmt: skip
        documents = [d for d in yaml.safe_load_all(rendered) if d]
        kinds = sorted(d["kind"] for d in documents)
        assert kinds == [
            "PersistentVolume", "PersistentVolumeClaim", "Role", "RoleBinding", "Secret",
            "ServiceAccount",
        ], kinds  # fmt: skip
        assert {d["metadata"]["name"] for d in documents if d["kind"] == "PersistentVolume"} == {
            volume
        }
        kubectl(deployment, "apply", "-f", "-", stdin=rendered)
        kubectl(
            deployment, "wait", "--for=jsonpath={.status.phase}=Bound",
            "persistentvolumeclaim/mpp-batch-data", "--timeout=60s",
        )  # fmt: skip
        yield deployment
    finally:
        deployment.kubectl("delete", "namespace", deployment.namespace, "--wait=false")
        deployment.kubectl("delete", "persistentvolume", volume, "--wait=false")
