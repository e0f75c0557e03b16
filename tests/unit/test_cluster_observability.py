"""`mpp deploy observability`'s steps (mpp.stack.cluster_observability) against a recording
stand-in for kubectl and containerd: what is imported when, where the objects are applied,
what is waited for. The real run is tests/cluster/test_observability.py."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from mpp.config import Settings
from mpp.stack import cluster_observability as module
from mpp.stack.cluster_observability_objects import JAEGER, PART_OF, PROMETHEUS

NAMESPACE = "obs-unit"


class Kubectl:
    """Records kubectl's arguments and answers like a cluster where everything becomes Ready."""

    calls: list[tuple[str, ...]]
    applied: list[dict[str, Any]]

    def __init__(self, settings: Settings, namespace: str) -> None:
        self.namespace = namespace
        self.calls = []
        self.applied = []

    def require_cluster(self) -> None:
        self.calls.append(("require_cluster",))

    def ensure_namespace(self) -> None:
        self.calls.append(("ensure_namespace", self.namespace))

    def kubectl(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        self.calls.append(args)
        if "deployments" in args:
            items = [
                {
                    "metadata": {"name": name},
                    "spec": {"template": {"spec": {"containers": [{"image": f"{name}:t"}]}}},
                    "status": {"readyReplicas": 1},
                }
                for name in (JAEGER, PROMETHEUS)
            ]
            return json.dumps({"items": items})
        if "service" in args:
            return "10.96.0.77"
        return ""

    def kubectl_with_input(self, text: str, *args: str) -> subprocess.CompletedProcess[str]:
        self.calls.append(args)
        self.applied.append(json.loads(text))
        return subprocess.CompletedProcess(["kubectl", *args], 0, "", "")


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    binaries = []
    for name, version in (("jaeger", "v1.75.0"), ("prometheus", "v0.316.0")):
        binary = tmp_path / "observability" / f"{name}-{version}" / "bin" / name
        binary.parent.mkdir(parents=True)
        binary.write_bytes(f"static {name}".encode())
        binaries.append(binary)
    containerd: set[str] = set()
    imported: list[list[str]] = []
    pruned: list[tuple[set[str], list[str]]] = []

    def import_image(tar: Path) -> None:
        with tarfile.open(tar) as archive:
            manifest = json.loads(archive.extractfile("manifest.json").read())  # type: ignore[union-attr]
        imported.append(manifest[0]["RepoTags"])
        containerd.update(manifest[0]["RepoTags"])

    monkeypatch.setattr(module.gobuilds, "binary", lambda *args: list(binaries))
    monkeypatch.setattr(module, "image_present", lambda ref: ref in containerd)
    monkeypatch.setattr(module, "import_image", import_image)
    monkeypatch.setattr(module, "prune_images", lambda *args: pruned.append(args) or [])
    monkeypatch.setattr(module, "images_dir", lambda: tmp_path / "images")
    monkeypatch.setattr(module, "Deployment", Kubectl)
    return {"imported": imported, "pruned": pruned, "images": tmp_path / "images"}


def test_up_imports_applies_into_the_namespace_and_waits_for_both(
    stand_in: dict[str, Any],
) -> None:
    observability = module.Observability(Settings(_env_file=None), NAMESPACE)  # type: ignore[call-arg]
    endpoints = observability.up(lambda message: None)
    kubectl: Kubectl = observability.cluster  # type: ignore[assignment]

    refs = [tags[0] for tags in stand_in["imported"]]
    assert [ref.rsplit(":", 1)[0] for ref in refs] == [
        "localhost/mpp/jaeger",
        "localhost/mpp/prometheus",
    ]
    assert not list(stand_in["images"].glob("*.tar"))  # the archives go once imported
    assert [keep for keep, _ in stand_in["pruned"]] == [{refs[0]}, {refs[1]}]

    (applied,) = kubectl.applied
    apply_call = next(call for call in kubectl.calls if "apply" in call)
    assert apply_call == ("-n", NAMESPACE, "apply", "-f", "-")
    assert applied["kind"] == "List"
    images = {
        item["metadata"]["name"]: item["spec"]["template"]["spec"]["containers"][0]["image"]
        for item in applied["items"]
        if item["kind"] == "Deployment"
    }
    assert images == {JAEGER: refs[0], PROMETHEUS: refs[1]}
    assert ("ensure_namespace", NAMESPACE) in kubectl.calls
    rollouts = [call for call in kubectl.calls if "rollout" in call]
    assert [call[:5] for call in rollouts] == [
        ("-n", NAMESPACE, "rollout", "status", f"deployment/{JAEGER}"),
        ("-n", NAMESPACE, "rollout", "status", f"deployment/{PROMETHEUS}"),
    ]
    assert [(e.name, e.ready, e.url) for e in endpoints] == [
        (JAEGER, True, "http://10.96.0.77:16686"),
        (PROMETHEUS, True, "http://10.96.0.77:9090"),
    ]

    # Unchanged binaries: nothing imported again.
    module.Observability(Settings(_env_file=None), NAMESPACE).up(lambda message: None)  # type: ignore[call-arg]
    assert len(stand_in["imported"]) == 2


def test_down_deletes_what_up_labelled_in_the_namespace(stand_in: dict[str, Any]) -> None:
    observability = module.Observability(Settings(_env_file=None), NAMESPACE)  # type: ignore[call-arg]
    observability.down(lambda message: None)
    kubectl: Kubectl = observability.cluster  # type: ignore[assignment]
    (delete,) = [call for call in kubectl.calls if "delete" in call]
    assert delete[:3] == ("-n", NAMESPACE, "delete")
    assert f"app.kubernetes.io/part-of={PART_OF}" in delete
