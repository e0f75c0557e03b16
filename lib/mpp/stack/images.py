"""The services' images without a Docker engine: the Dockerfile's targets, built by buildah.

``mpp images build [SERVICE ...]`` builds each service's target of the repository's
Dockerfile with ``buildah bud --isolation chroot`` on a local Debian base (made once by
mmdebstrap from the machine's own apt sources, imported with ``buildah from scratch``), names
it ``localhost/mpp/<service>:<tag>`` and writes it as a docker-archive tar that containerd
imports (``--import``: ``mpp.stack.cluster.import_image``).

``<tag>`` hashes what goes into an image (the Dockerfile, pyproject.toml, uv.lock, README.md,
.dockerignore, lib/ and services/ less the dev-only paths the wheel leaves out, and the base's
recipe): an unchanged tree names the same images, and a tar already in the cache
(``<cache>/images/<service>-<tag>.tar``) is not built again. buildah keeps its storage under
``<cache>/buildah/<driver>`` (overlay where the kernel allows it, else vfs) and its cache
mounts under ``<cache>/buildah/tmp``, never in the machine's shared storage.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mpp.stack.base import Progress, StackError, apt_install
from mpp.stack.services import SERVICES

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

SUITE = "bookworm"
# The Debian base: python3 (3.11 in bookworm) with venv, and the CA bundle; no docs, no
# locales, and no perl (usrmerge's, not needed once /usr is merged).
MMDEBSTRAP_ARGS = (
    "--variant=minbase",
    "--include=python3,python3-venv,ca-certificates,usr-is-merged",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
    '--customize-hook=chroot "$1" sh -c'
    ' "apt-get purge -y -q usrmerge perl perl-modules-5.36 libperl5.36'
    ' && apt-get autoremove -y -q --purge"',
)
BASE_PYTHON = "/usr/bin/python3.11"  # Debian's; python:3.11-slim has /usr/local/bin/python3.11
HOST_CA_IN_BUILD = "/run/host-ca.crt"
RUNROOT = Path("/run/mpp-buildah")


class ImageError(StackError):
    """An image could not be built; the message says where to look."""


@dataclass(frozen=True)
class BuiltImage:
    service: str
    ref: str
    tar: Path
    size_bytes: int  # the docker-archive tar's size (uncompressed layers)
    seconds: float
    cached: bool


def cache_dir() -> Path:
    return Path(os.environ.get("MPP_CACHE_DIR", Path.home() / ".cache" / "mpp"))


def images_dir() -> Path:
    return cache_dir() / "images"


def apt_sources(root: Path = Path("/etc/apt")) -> list[str]:
    """The machine's apt sources for SUITE, as one-line ``deb URI SUITE COMPONENTS`` entries
    (from sources.list, *.list and deb822 *.sources), so that the base comes from the mirror
    this machine is configured with."""
    files = [root / "sources.list"] if (root / "sources.list").is_file() else []
    folder = root / "sources.list.d"
    if folder.is_dir():
        files += sorted(p for p in folder.iterdir() if p.suffix in {".list", ".sources"})
    lines: list[str] = []
    for path in files:
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            for stanza in text.split("\n\n"):
                fields: dict[str, str] = {}
                for raw in stanza.splitlines():
                    if raw.startswith("#") or ":" not in raw:
                        continue
                    name, _, value = raw.partition(":")
                    fields[name.strip().lower()] = value.strip()
                if "deb" not in fields.get("types", "").split():
                    continue
                if fields.get("enabled", "yes").lower() == "no":
                    continue
                for uri in fields.get("uris", "").split():
                    for suite in fields.get("suites", "").split():
                        lines.append(f"deb {uri} {suite} {fields.get('components', 'main')}")
        else:
            for raw in text.splitlines():
                words = raw.split("#", 1)[0].split()
                if words and words[0] == "deb":
                    words = [w for w in words if not w.startswith("[") and not w.endswith("]")]
                    lines.append(" ".join(words))
    wanted = [line for line in lines if line.split()[2].startswith(SUITE)]
    if not wanted:
        raise ImageError(f"no apt source for {SUITE} under {root}: the base needs a Debian mirror")
    return list(dict.fromkeys(wanted))


def base_key() -> str:
    recipe = "\n".join([SUITE, *MMDEBSTRAP_ARGS, *apt_sources()])
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def base_ref() -> str:
    return f"localhost/mpp/base:{base_key()}"


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


def _run(argv: Sequence[str], what: str, log: Path, progress: Progress | None = None) -> None:
    """Run a long command, its output appended to ``log``; ``progress`` gets its build steps."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as handle:
        handle.write(f"$ {' '.join(argv)}\n")
        handle.flush()
        proc = subprocess.Popen(
            list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            handle.write(line)
            if progress and (line.startswith(("STEP ", "[")) and " STEP " in f" {line}"):
                progress(f"  {line.strip()[:110]}")
        code = proc.wait()
    if code != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(True)[-25:])
        raise ImageError(f"{what} failed (exit {code}); log: {log}\n{tail}")


class Buildah:
    """buildah with storage of our own: ``<cache>/buildah/<driver>``, and its temporary files
    and RUN cache mounts (uv's downloads) under ``<cache>/buildah/tmp`` (TMPDIR)."""

    def __init__(self, driver: str) -> None:
        self.driver = driver
        self.root = cache_dir() / "buildah" / driver
        self.tmp = cache_dir() / "buildah" / "tmp"

    def argv(self, *args: str) -> list[str]:
        self.tmp.mkdir(parents=True, exist_ok=True)
        return [
            "env",
            f"TMPDIR={self.tmp}",
            "buildah",
            "--root",
            str(self.root),
            "--runroot",
            str(RUNROOT / self.driver),
            "--storage-driver",
            self.driver,
            *args,
        ]

    def ok(self, *args: str) -> bool:
        result = subprocess.run(self.argv(*args), capture_output=True, check=False)
        return result.returncode == 0

    def has_image(self, ref: str) -> bool:
        return self.ok("inspect", "--type", "image", ref)


def _probe_overlay() -> bool:
    """Whether buildah's overlay driver works here (a container with a layer, mounted)."""
    overlay = Buildah("overlay")
    result = subprocess.run(
        overlay.argv("from", "--pull=never", "scratch"), capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        return False
    container = result.stdout.strip()
    try:
        return overlay.ok("run", "--isolation", "chroot", container, "true") or overlay.ok(
            "mount", container
        )
    finally:
        overlay.ok("rm", container)


# The image builders, from Debian's packages (installed once per machine when missing).
BUILD_TOOLS = {"buildah": "buildah", "mmdebstrap": "mmdebstrap"}


def _to_stderr(message: str) -> None:
    sys.stderr.write(message + "\n")


def buildah(progress: Progress | None = None) -> Buildah:
    """buildah, installed first when missing (with mmdebstrap, which makes the base; the
    install reports on ``progress``, else on stderr); its storage driver is overlay if that
    works on this machine (probed once, remembered), else vfs; MPP_BUILDAH_DRIVER=overlay|vfs
    decides instead."""
    missing = sorted({pkg for tool, pkg in BUILD_TOOLS.items() if shutil.which(tool) is None})
    if missing:
        apt_install(missing, progress or _to_stderr)
    forced = os.environ.get("MPP_BUILDAH_DRIVER")
    if forced:
        return Buildah(forced)
    remembered = images_dir() / "storage-driver"
    if not remembered.exists():
        images_dir().mkdir(parents=True, exist_ok=True)
        remembered.write_text("overlay" if _probe_overlay() else "vfs")
    return Buildah(remembered.read_text().strip())


def ensure_base(tool: Buildah, progress: Progress) -> str:
    """The Debian base image in buildah's storage (made once per recipe); returns its ref."""
    ref = base_ref()
    if tool.has_image(ref):
        return ref
    tar = images_dir() / f"base-{base_key()}.tar"
    log = images_dir() / "logs" / f"base-{base_key()}.log"
    if not tar.exists():
        if shutil.which("mmdebstrap") is None:
            raise ImageError("mmdebstrap is not installed (apt-get install mmdebstrap)")
        progress(f"making the Debian {SUITE} base with mmdebstrap (once, about a minute)")
        partial = tar.with_suffix(".partial.tar")
        _run(
            ["mmdebstrap", *MMDEBSTRAP_ARGS, SUITE, str(partial), *apt_sources()], "mmdebstrap", log
        )
        partial.rename(tar)
    tar.with_suffix(".size").write_text(str(tar.stat().st_size))
    progress(f"importing the base into buildah as {ref}")
    result = subprocess.run(
        tool.argv("from", "--pull=never", "scratch"), capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ImageError(f"buildah from scratch failed: {result.stderr.strip()}")
    container = result.stdout.strip()
    try:
        _run(tool.argv("add", container, str(tar), "/"), "buildah add", log)
        _run(
            tool.argv(
                "config",
                "--env",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--env",
                "LANG=C.UTF-8",
                "--cmd",
                "/bin/bash",
                container,
            ),
            "buildah config",
            log,
        )
        _run(tool.argv("commit", "--rm", container, ref), "buildah commit", log)
    except ImageError:
        tool.ok("rm", container)
        raise
    return ref


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
        _run(tool.argv(*argv, str(root)), f"building {service}", log, progress)
    if tree_tag(root) != tag:  # each target is its own `buildah bud`, reading the tree anew
        tool.ok("rmi", ref)
        raise ImageError(f"the tree changed while {service} was building: run the build again")
    progress(f"{service}: writing {tar.name}")
    partial = tar.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    _run(tool.argv("push", ref, f"docker-archive:{partial}:{ref}"), "buildah push", log)
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
        from mpp.stack.cluster import image_present, import_image, prune_images
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


def built_refs(tool: Buildah) -> list[str]:
    """The ``localhost/mpp/<name>:<tag>`` images in buildah's storage."""
    result = subprocess.run(
        tool.argv("images", "--format", "{{.Name}}:{{.Tag}}"),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return sorted(
        {line.strip() for line in result.stdout.splitlines() if line.startswith("localhost/mpp/")}
    )


def drop_other_tags(tool: Buildah, name: str, keep_tag: str) -> list[str]:
    """Remove ``localhost/mpp/<name>`` images of other tags than ``keep_tag`` (earlier trees'
    builds; the layers the kept one shares stay). Returns what it removed."""
    prefix = f"localhost/mpp/{name}:"
    stale = [ref for ref in built_refs(tool) if ref.startswith(prefix) and ref != prefix + keep_tag]
    if stale:
        tool.ok("rmi", *stale)
    return stale
