"""The services' images without a Docker engine: the Dockerfile's targets, built by buildah.

``mpp images build [SERVICE ...]`` builds each service's target of the repository's
Dockerfile with ``buildah bud --isolation chroot`` on a local Debian base (made once by
mmdebstrap from the machine's own apt sources, imported with ``buildah from scratch``), names
it ``localhost/mpp/<service>:<tag>`` and writes it as a docker-archive tar that containerd
imports (``--import``: ``mpp.stack.cluster_containerd.import_image``).

``<tag>`` hashes what goes into an image (the Dockerfile, pyproject.toml, uv.lock, README.md,
.dockerignore, lib/ and services/ less the dev-only paths the wheel leaves out, and the base's
recipe): an unchanged tree names the same images, and a tar already in the cache
(``<cache>/images/<service>-<tag>.tar``) is not built again. buildah keeps its storage under
``<cache>/buildah/<driver>`` (overlay where the kernel allows it, else vfs) and its cache
mounts under ``<cache>/buildah/tmp``, never in the machine's shared storage
(mpp.stack.buildah: buildah itself and the base).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mpp.stack.base import Progress
from mpp.stack.buildah import (
    Buildah,
    ImageError,
    apt_sources,
    base_key,
    base_ref,
    buildah,
    built_refs,
    drop_other_tags,
    ensure_base,
    images_dir,
    run_logged,
)
from mpp.stack.services import SERVICES

# Names that other modules and the tests take from here.
__all__ = [
    "Buildah",
    "BuiltImage",
    "ImageError",
    "apt_sources",
    "base_key",
    "base_ref",
    "build",
    "buildah",
    "built_refs",
    "drop_other_tags",
    "ensure_base",
    "image_ref",
    "image_tar",
    "images_dir",
    "tree_tag",
]

REPO = Path(__file__).resolve().parents[3]
# The files of the tree that an image is built from (the build context, see .dockerignore).
# README.md is in the context too, but only as the wheel's long description: an edit of the
# docs changes no image's behaviour, so it does not make a new tag (and a rebuild).
TREE_FILES = ("Dockerfile", ".dockerignore", "pyproject.toml", "uv.lock")
TREE_DIRS = ("lib", "services")
# Dev tooling that the wheel leaves out (pyproject.toml, tool.hatch.build.targets.wheel):
# it changes no image.
DEV_ONLY = ("lib/mpp/stack/", "lib/mpp/samples.py", "lib/mpp/pipeline.py")
SKIPPED_PARTS = {"__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}

BASE_PYTHON = "/usr/bin/python3.11"  # Debian's; python:3.11-slim has /usr/local/bin/python3.11
HOST_CA_IN_BUILD = "/run/host-ca.crt"


@dataclass(frozen=True)
class BuiltImage:
    service: str
    ref: str
    tar: Path
    size_bytes: int  # the docker-archive tar's size (uncompressed layers)
    seconds: float
    cached: bool


def _tree_paths(root: Path) -> Iterable[Path]:
    for name in TREE_FILES:
        yield root / name
    for name in TREE_DIRS:
        for path in sorted((root / name).rglob("*")):
            relative = path.relative_to(root).as_posix()
            if not path.is_file() or path.is_symlink() or SKIPPED_PARTS & set(path.parts):
                continue
            # The services' READMEs are not in the wheel (its packages are the mpp_* folders).
            if path.suffix in {".pyc", ".md"} or relative.startswith(DEV_ONLY):
                continue
            yield path


def tree_tag(root: Path = REPO) -> str:
    """The content hash that names the images of this tree (12 hex digits)."""
    digest = hashlib.sha256(base_key().encode())
    for path in _tree_paths(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:12]


def image_ref(service: str, root: Path = REPO) -> str:
    """``localhost/mpp/<service>:<tag>`` for the current tree (built or not)."""
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}; one of: {', '.join(SERVICES)}")
    return f"localhost/mpp/{service}:{tree_tag(root)}"


def image_tar(service: str, root: Path = REPO) -> Path:
    return images_dir() / f"{service}-{tree_tag(root)}.tar"


def host_ca() -> Path | None:
    """The machine's CA bundle, for package downloads inside the build (SSL_CERT_FILE or
    PIP_CERT), mounted at a neutral path: never over the image's own bundle."""
    for name in ("SSL_CERT_FILE", "PIP_CERT"):
        value = os.environ.get(name)
        if value and Path(value).is_file():
            return Path(value)
    return None


def build_one(
    tool: Buildah, service: str, base: str, tag: str, root: Path, progress: Progress
) -> BuiltImage:
    ref = f"localhost/mpp/{service}:{tag}"
    tar = images_dir() / f"{service}-{tag}.tar"
    if tar.exists():
        progress(f"{service}: {ref} cached ({tar})")
        return BuiltImage(service, ref, tar, tar.stat().st_size, 0.0, True)
    start = time.monotonic()
    log = images_dir() / "logs" / f"{service}-{tag}.log"
    log.unlink(missing_ok=True)
    if not tool.has_image(ref):
        progress(f"{service}: building {ref} (log: {log})")
        argv = [
            "bud",
            "--isolation",
            "chroot",
            "--layers",
            "--pull=never",
            "--target",
            service,
            "--build-arg",
            f"PYTHON_IMAGE={base}",
            "--build-arg",
            f"PYTHON={BASE_PYTHON}",
            "--tag",
            ref,
            "--file",
            str(root / "Dockerfile"),
        ]
        ca = host_ca()
        if ca is not None:
            argv += ["--volume", f"{ca}:{HOST_CA_IN_BUILD}:ro"]
            argv += ["--build-arg", f"HOST_CA={HOST_CA_IN_BUILD}"]
        run_logged(tool.argv(*argv, str(root)), f"building {service}", log, progress)
    if tree_tag(root) != tag:  # each target is its own `buildah bud`, reading the tree anew
        tool.ok("rmi", ref)
        raise ImageError(f"the tree changed while {service} was building: run the build again")
    progress(f"{service}: writing {tar.name}")
    partial = tar.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    run_logged(tool.argv("push", ref, f"docker-archive:{partial}:{ref}"), "buildah push", log)
    partial.rename(tar)
    tar.with_suffix(".size").write_text(str(tar.stat().st_size))
    for old in images_dir().glob(f"{service}-*.*"):  # earlier trees' archives of the service
        tag_part = old.name[len(service) + 1 :].split(".")[0]
        if old.suffix in {".tar", ".size"} and old.stem != tar.stem and tag_part.isalnum():
            old.unlink()
    listed = subprocess.run(
        tool.argv("images", "--format", "{{.Name}}:{{.Tag}}"),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    for name in listed.stdout.split():  # earlier trees' images of the service
        if name.startswith(f"localhost/mpp/{service}:") and name != ref:
            tool.ok("rmi", name)
    seconds = time.monotonic() - start
    return BuiltImage(service, ref, tar, tar.stat().st_size, seconds, False)


def build(
    services: Sequence[str] = (),
    progress: Progress = print,
    import_images: bool = False,
    root: Path = REPO,
) -> list[BuiltImage]:
    """Build (or reuse) the images of ``services`` (all when empty) for the current tree."""
    unknown = [s for s in services if s not in SERVICES]
    if unknown:
        raise ImageError(f"unknown service(s) {', '.join(unknown)}; one of: {', '.join(SERVICES)}")
    # The slim ones first: they share the dependency layers; the embedder (torch) last.
    wanted = sorted(services or SERVICES, key=lambda s: (s == "embedder", list(SERVICES).index(s)))
    tag = tree_tag(root)
    built: list[BuiltImage] = []
    if import_images:
        from mpp.stack.cluster_containerd import image_present, import_image, prune_images
    in_cluster = {s for s in wanted if import_images and image_present(image_ref(s, root))}
    missing = [
        s for s in wanted if s not in in_cluster and not (images_dir() / f"{s}-{tag}.tar").exists()
    ]
    tool = buildah(progress) if missing else None
    base = ensure_base(tool, progress) if tool is not None else base_ref()
    if tool is not None:
        progress(f"buildah storage: {tool.root} ({tool.driver})")
        prune_stale_layers(tool, root, progress)
    for service in wanted:
        ref = f"localhost/mpp/{service}:{tag}"
        tar = images_dir() / f"{service}-{tag}.tar"
        if service in in_cluster:
            progress(f"{service}: {ref} already in the cluster's containerd")
            built.append(BuiltImage(service, ref, tar, recorded_size(tar), 0.0, True))
            continue
        if tool is None or tar.exists():
            progress(f"{service}: {ref} cached ({tar})")
            built.append(BuiltImage(service, ref, tar, recorded_size(tar), 0.0, True))
        else:
            built.append(build_one(tool, service, base, tag, root, progress))
        image = built[-1]
        how = "cached" if image.cached else f"built in {image.seconds:.0f} s"
        progress(f"{service}: {image.ref} {image.size_bytes / 1e6:.0f} MB ({how})")
        if import_images:
            progress(f"{service}: importing {image.tar.name} into the cluster's containerd")
            import_image(image.tar)
            # The cluster holds it now, and buildah's storage can write it again: the archive
            # would only be a third copy (the embedder's is 6.5 GB).
            image.tar.unlink()
    if tool is not None:
        for service in wanted:
            drop_other_tags(tool, service, tag)
    if import_images:
        prune_images({image.ref for image in built}, [f"localhost/mpp/{s}:" for s in wanted])
    return built


def recorded_size(tar: Path) -> int:
    """The size of an image's archive, as written when it was pushed (0 if unknown)."""
    try:
        return int(tar.with_suffix(".size").read_text())
    except (OSError, ValueError):
        return tar.stat().st_size if tar.exists() else 0


def deps_key(root: Path = REPO) -> str:
    """What the dependency layers are built from: the Dockerfile, the lock and the base."""
    digest = hashlib.sha256(base_key().encode())
    for name in ("Dockerfile", "pyproject.toml", "uv.lock"):
        digest.update(hashlib.sha256((root / name).read_bytes()).digest())
    return digest.hexdigest()[:12]


def prune_stale_layers(tool: Buildah, root: Path, progress: Progress) -> None:
    """When the dependencies changed, drop the earlier builds (buildah's layer cache: the
    embedder's and the job image's are about 7 GB each) before building the new ones. Same
    dependencies: keep them, so that a code change rebuilds only the project's layer.

    ``rmi --prune`` alone removes only untagged images: the earlier tree's tagged embedder and
    job images kept their layers, and with them beside the new build a CI run ran out of disk.
    """
    marker = images_dir() / "deps-key"
    key = deps_key(root)
    if marker.exists() and marker.read_text().strip() != key:
        progress("images: the dependencies changed; dropping the earlier builds' cached layers")
        stale = [ref for ref in built_refs(tool) if not ref.startswith("localhost/mpp/base:")]
        if stale:
            tool.ok("rmi", *stale)
        tool.ok("rmi", "--prune")
    marker.write_text(key)
