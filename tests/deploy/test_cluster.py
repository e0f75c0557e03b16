"""The image and the chart on a real engine: build the image, then a kind cluster.

Both need a Docker engine (the `docker` CLI alone is not enough) and are skipped without one;
the kind test also needs the `kind` binary. Neither has run on the machine these tests were
written on (no Docker engine there): helm/README.md says what was and was not verified.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mpp.stack.services import SERVICES
from tests.deploy.conftest import CHART, CI_VALUES, run_helm
from tests.deploy.dockerfile import REPO

pytestmark = pytest.mark.timeout(3600)

IMAGE = "mpp:deploy-test"


def docker_engine() -> str | None:
    """None when a Docker engine answers, else why not."""
    if shutil.which("docker") is None:
        return "no docker CLI"
    result = subprocess.run(
        ["docker", "info", "--format", "{{.ServerVersion}}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0 or not result.stdout.strip():
        return (result.stderr.strip().splitlines() or ["docker info failed"])[-1]
    return None


_why_not = docker_engine()
needs_docker = pytest.mark.skipif(
    _why_not is not None, reason=f"no Docker engine on this machine ({_why_not})"
)


def run(*args: str, timeout: int = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO
    )


@pytest.fixture(scope="module")
def image() -> str:
    result = run("docker", "build", "-t", IMAGE, ".")
    assert result.returncode == 0, result.stderr[-5000:]
    return IMAGE


@needs_docker
def test_image_runs_as_non_root_on_a_read_only_root(image: str) -> None:
    base = ["docker", "run", "--rm", "--read-only", "--tmpfs", "/tmp", "--tmpfs", "/var/lib/mpp"]
    uid = run(*base, image, "id", "-u")
    assert uid.returncode == 0, uid.stderr
    assert uid.stdout.strip() != "0"
    modules = ", ".join(module for module, _port in SERVICES.values())
    imports = run(*base, "--network", "none", image, "python", "-c", f"import {modules}")
    assert imports.returncode == 0, imports.stderr
    # The packaged model loads with no network at all.
    encode = run(
        *base,
        "--network",
        "none",
        image,
        "python",
        "-c",
        "from mpp.embedding import Embedder; print(Embedder().encode(['hello']).shape)",
    )
    assert encode.returncode == 0, encode.stderr
    assert "384" in encode.stdout
    cli = run(*base, image, "mpp", "db", "--help")
    assert cli.returncode == 0 and "migrate" in cli.stdout


@pytest.fixture(scope="module")
def kind_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if shutil.which("kind") is None:
        pytest.skip("kind is not installed (go install sigs.k8s.io/kind@latest)")
    name = f"mpp-{uuid.uuid4().hex[:6]}"
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    created = run("kind", "create", "cluster", "--name", name, "--kubeconfig", str(kubeconfig))
    assert created.returncode == 0, created.stderr
    try:
        yield kubeconfig
    finally:
        run("kind", "delete", "cluster", "--name", name)


@needs_docker
def test_the_api_server_accepts_every_object(helm: Path, kind_cluster: Path) -> None:
    """A server-side dry run: each object validated by a real API server (no store needed)."""
    result = run_helm(
        helm,
        "install",
        "mpp",
        str(CHART),
        "--kubeconfig",
        str(kind_cluster),
        "--namespace",
        "mpp",
        "--create-namespace",
        "--dry-run=server",
        "-f",
        str(CI_VALUES / "secrets-values.yaml"),
    )
    assert result.returncode == 0, result.stderr
    assert "kind: Deployment" in result.stdout
