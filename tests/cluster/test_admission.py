"""What a real API server says of the chart: every rendered object admitted into a namespace
that enforces the restricted Pod Security Standard (a server-side dry run runs admission, which
`helm install --dry-run=server` does not), a non-compliant pod refused there, and the local
install's errors when an image is missing."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator

import pytest
import yaml

from mpp.config import Settings
from mpp.stack.base import StackError
from mpp.stack.deploy import Deployment, helm_binary

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def dry_run(stack_settings: Settings) -> Iterator[Deployment]:
    deployment = Deployment(stack_settings, namespace=f"mpp-dry-{uuid.uuid4().hex[:8]}")
    deployment.require_cluster()
    deployment.ensure_namespace()
    try:
        yield deployment
    finally:
        deployment.kubectl("delete", "namespace", deployment.namespace, "--wait=false")


def kubectl_apply(deployment: Deployment, manifests: str) -> subprocess.CompletedProcess[str]:
    return deployment.kubectl_with_input(
        manifests, "apply", "--dry-run=server", "-n", deployment.namespace, "-f", "-"
    )


def test_the_api_server_admits_every_object_of_the_local_install(dry_run: Deployment) -> None:
    values = dry_run.values("dry-run")
    rendered = subprocess.run(
        [
            str(helm_binary()),
            "template",
            "mpp",
            str(dry_run.chart),
            "--namespace",
            dry_run.namespace,
            "-f",
            "-",
            # Hooks too: the migration Job and the test pod must pass admission as well.
            "--include-crds",
        ],
        input=yaml.safe_dump(values),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Job", "NetworkPolicy", "EndpointSlice", "Pod"} <= kinds, kinds
    applied = kubectl_apply(dry_run, rendered)
    assert applied.returncode == 0, applied.stderr
    # One line per object, each accepted by the server (dry run).
    assert applied.stdout.count("(server dry run)") == len(docs), applied.stdout


def test_the_namespace_refuses_a_pod_that_is_not_restricted(dry_run: Deployment) -> None:
    """The control for the test above: admission does run in that namespace."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged"},
        "spec": {"containers": [{"name": "c", "image": "localhost/mpp/ingest:any"}]},
    }
    applied = kubectl_apply(dry_run, json.dumps(pod))
    assert applied.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in applied.stderr, applied.stderr


def test_a_missing_image_names_the_image_and_the_command_that_builds_it(
    dry_run: Deployment,
) -> None:
    with pytest.raises(StackError) as refused:
        dry_run.up(lambda message: None, tag="0000-not-built")
    message = str(refused.value)
    assert "localhost/mpp/embedder:0000-not-built" in message
    assert "mpp images build --import" in message
