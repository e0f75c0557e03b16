"""The cluster's containerd: where its socket and state live, and the images it holds
(import, presence, pruning) for pods (dev tooling, part of mpp.stack.cluster)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from mpp.stack.base import StackError, run_checked

CONTAINERD_STATE = Path("/run/mpp-containerd")
CONTAINERD_SOCKET = CONTAINERD_STATE / "containerd.sock"
SNAPSHOTTER_FILE = CONTAINERD_STATE / "snapshotter"
# The state dir of the clone whose cluster holds the machine (bridge, socket, nft table).
OWNER_FILE = CONTAINERD_STATE / "owner"


def snapshotter() -> str:
    try:
        return SNAPSHOTTER_FILE.read_text().strip() or "overlayfs"
    except OSError:
        return "overlayfs"


def import_image(tar_path: Path) -> None:
    """Load an image tar (docker-archive or OCI) into the cluster's containerd (k8s.io).

    Pods then use it by the name in the tar with imagePullPolicy Never or IfNotPresent.
    """
    if not CONTAINERD_SOCKET.exists():
        raise StackError("the cluster's containerd is not running: run `mpp cluster up` first")
    run_checked(
        ["ctr", "--address", str(CONTAINERD_SOCKET), "-n", "k8s.io", "images", "import",
         "--snapshotter", snapshotter(), str(tar_path)],
        f"ctr images import {tar_path}",
    )  # fmt: skip


def image_present(name: str) -> bool:
    """Whether containerd (namespace k8s.io) holds an image by this exact name; False when
    the cluster's containerd is not running."""
    try:
        result = subprocess.run(
            ["ctr", "--address", str(CONTAINERD_SOCKET), "-n", "k8s.io", "images", "ls", "-q"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and name in result.stdout.split()


def prune_images(keep: set[str], prefixes: list[str]) -> list[str]:
    """Remove the images named with one of ``prefixes`` but not in ``keep`` (earlier trees'
    builds), and the ``sha256:<id>`` aliases that the CRI plugin adds to every image and that
    no named image shares any more: left behind, an alias keeps all its layers (about 7 GB for
    the embedder or the job image) and containerd never collects them."""
    stale = [
        name
        for name in _image_digests()
        if not name.startswith("sha256:")
        and name not in keep
        and any(name.startswith(prefix) for prefix in prefixes)
    ]
    if stale:
        run_checked(
            ["ctr", "--address", str(CONTAINERD_SOCKET), "-n", "k8s.io", "images", "rm", *stale],
            "ctr images rm",
        )
    images = _image_digests()
    named = {digest for name, digest in images.items() if not name.startswith("sha256:")}
    orphans = [n for n, d in images.items() if n.startswith("sha256:") and d not in named]
    if orphans:
        run_checked(
            ["ctr", "--address", str(CONTAINERD_SOCKET), "-n", "k8s.io", "images", "rm", *orphans],
            "ctr images rm (aliases of removed images)",
        )
    return stale + orphans


def _image_digests() -> dict[str, str]:
    """Every image name in containerd's k8s.io namespace -> its manifest digest."""
    result = subprocess.run(
        ["ctr", "--address", str(CONTAINERD_SOCKET), "-n", "k8s.io", "images", "ls"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    # REF TYPE DIGEST SIZE...: the digest is the third column.
    return {row[0]: row[2] for row in rows if len(row) >= 3}


def overlay_works(root: Path) -> bool:
    """Whether this kernel lets us mount overlayfs under containerd's root."""
    probe = root / "tmp-overlay-probe"
    shutil.rmtree(probe, ignore_errors=True)
    try:
        for sub in ("lower", "upper", "work", "merged"):
            (probe / sub).mkdir(parents=True)
        options = f"lowerdir={probe}/lower,upperdir={probe}/upper,workdir={probe}/work"
        mounted = subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", options, str(probe / "merged")],
            capture_output=True, timeout=10, check=False,
        )  # fmt: skip
        if mounted.returncode != 0:
            return False
        subprocess.run(["umount", str(probe / "merged")], capture_output=True, check=False)
        return True
    finally:
        shutil.rmtree(probe, ignore_errors=True)
