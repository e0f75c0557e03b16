"""The batch job image (jobs/Dockerfile) without a Docker engine, built like the services'.

``python -m mpp.stack.job_image [--import]`` builds ``localhost/mpp/jobs:<tag>`` with buildah
(``mpp.stack.images``' storage, base and CA handling) on top of the embedder service's image of
the same tree (``JOB_ENV=localhost/mpp/embedder:<tree tag>``; ``mpp images build embedder``
makes it, this module never does):
the job image adds Java 17, pyspark and jobs/ and shares every layer of the embedder's (torch,
the model, the project), in buildah's storage and in the cluster's containerd alike. It writes
the image as a docker-archive tar, ``<cache>/images/jobs-<tag>.tar`` (its size also in
``jobs-<tag>.size``), and with ``--import`` loads it into the cluster's containerd and removes
the tar, as ``mpp images build --import`` does (nothing is done when containerd has it).

``<tag>`` hashes the services' tree tag (``mpp.stack.images.tree_tag``: the root Dockerfile,
the lock, lib/ and services/ less the dev-only paths, the base's recipe) and every file under
jobs/ (jobs/Dockerfile included): an unchanged tree names the same image, and a tar already in
the cache is not built again.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mpp.stack.base import Progress
from mpp.stack.buildah import (
    Buildah,
    ImageError,
    buildah,
    drop_other_tags,
    ensure_base,
    images_dir,
    run_logged,
)
from mpp.stack.images import (
    BASE_PYTHON,
    HOST_CA_IN_BUILD,
    REPO,
    SKIPPED_PARTS,
    host_ca,
    tree_tag,
)

NAME = "jobs"
ENV_SERVICE = "embedder"  # the service image whose environment the jobs run in


@dataclass(frozen=True)
class JobImage:
    ref: str
    tar: Path
    size_bytes: int  # the docker-archive tar's size (every layer, the embedder's included)
    seconds: float
    cached: bool
    imported: bool


def _jobs_files(root: Path) -> list[Path]:
    return [
        path
        for path in sorted((root / "jobs").rglob("*"))
        if path.is_file()
        and not path.is_symlink()
        and not SKIPPED_PARTS & set(path.parts)
        # Documentation is not in the image: a README change keeps the tag.
        and path.suffix not in {".pyc", ".md"}
    ]


def env_ref(root: Path = REPO, embedder_tag: str | None = None) -> str:
    """The embedder image the job image is built on: this tree's, or the one of ``embedder_tag``
    (an earlier tree's build, while this tree's is not built)."""
    return f"localhost/mpp/{ENV_SERVICE}:{embedder_tag or tree_tag(root)}"


def job_tag(root: Path = REPO, embedder_tag: str | None = None) -> str:
    """The content hash that names the job image (12 hex digits): of the image it is built on
    (whose tag is the tree's) and of jobs/."""
    digest = hashlib.sha256(env_ref(root, embedder_tag).encode())
    for path in _jobs_files(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:12]


def job_image_ref(root: Path = REPO, embedder_tag: str | None = None) -> str:
    """``localhost/mpp/jobs:<tag>`` for the current tree (built or not): the DAG's image
    (the ``mpp_batch_image`` Variable or MPP_BATCH_IMAGE) on the local cluster."""
    return f"localhost/mpp/{NAME}:{job_tag(root, embedder_tag)}"


def job_image_tar(root: Path = REPO, embedder_tag: str | None = None) -> Path:
    return images_dir() / f"{NAME}-{job_tag(root, embedder_tag)}.tar"


def _env_image(tool: Buildah, root: Path, embedder_tag: str | None, progress: Progress) -> str:
    """The embedder image of this tree in buildah's storage (read back from its tar when
    buildah no longer has it). Never built from here: that is `mpp images build`'s (several
    GB, and a second build beside a running one can fill the disk)."""
    ref = env_ref(root, embedder_tag)
    tar = images_dir() / f"{ENV_SERVICE}-{ref.rsplit(':', 1)[1]}.tar"
    if tool.has_image(ref):
        return ref
    if not tar.exists():
        raise ImageError(
            f"the job image is built on {ref}, which is not built: run "
            f"`mpp images build {ENV_SERVICE}` first (or `make images`), then this again"
        )
    progress(f"{NAME}: reading {tar.name} back into buildah's storage")
    log = images_dir() / "logs" / f"{NAME}-{job_tag(root, embedder_tag)}.log"
    run_logged(tool.argv("pull", f"docker-archive:{tar}"), "buildah pull", log)
    return ref


def _size(tar: Path) -> int:
    """The archive's size, as recorded when it was written (the archive may be gone)."""
    try:
        return int(tar.with_suffix(".size").read_text())
    except (OSError, ValueError):
        return tar.stat().st_size if tar.exists() else 0


def build(
    progress: Progress,
    import_image: bool = False,
    root: Path = REPO,
    embedder_tag: str | None = None,
) -> JobImage:
    """Build (or reuse) the job image of the current tree; ``import_image``: load it into the
    cluster's containerd too (then the archive goes: a third copy of the embedder's layers);
    ``embedder_tag``: build on that embedder image, not this tree's."""
    from mpp.stack.cluster_containerd import image_present, prune_images
    from mpp.stack.cluster_containerd import import_image as ctr_import

    tag = job_tag(root, embedder_tag)
    ref = f"localhost/mpp/{NAME}:{tag}"
    tar = images_dir() / f"{NAME}-{tag}.tar"
    start = time.monotonic()
    if import_image and image_present(ref):
        progress(f"{NAME}: {ref} already in the cluster's containerd")
        return JobImage(ref, tar, _size(tar), 0.0, True, False)
    cached = tar.exists()
    if cached:
        progress(f"{NAME}: {ref} cached ({tar})")
    else:
        tool = buildah(progress)
        base = ensure_base(tool, progress)
        log = images_dir() / "logs" / f"{NAME}-{tag}.log"
        if not tool.has_image(ref):
            env = _env_image(tool, root, embedder_tag, progress)
            progress(f"{NAME}: building {ref} on {env} (log: {log})")
            argv = [
                "bud",
                "--isolation",
                "chroot",
                "--layers",
                "--pull=never",
                "--build-arg",
                f"JOB_ENV={env}",
                "--build-arg",
                f"PYTHON_IMAGE={base}",
                "--build-arg",
                f"PYTHON={BASE_PYTHON}",
                "--ignorefile",
                str(root / "jobs" / "Dockerfile.dockerignore"),
                "--tag",
                ref,
                "--file",
                str(root / "jobs" / "Dockerfile"),
            ]
            ca = host_ca()
            if ca is not None:
                argv += ["--volume", f"{ca}:{HOST_CA_IN_BUILD}:ro"]
                argv += ["--build-arg", f"HOST_CA={HOST_CA_IN_BUILD}"]
            run_logged(tool.argv(*argv, str(root)), f"building {NAME}", log, progress)
            if job_tag(root, embedder_tag) != tag:
                tool.ok("rmi", ref)
                raise ImageError(f"the tree changed while {NAME} was building: run it again")
        progress(f"{NAME}: writing {tar.name}")
        partial = tar.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        run_logged(tool.argv("push", ref, f"docker-archive:{partial}:{ref}"), "buildah push", log)
        partial.rename(tar)
        tar.with_suffix(".size").write_text(str(tar.stat().st_size))
        for old in images_dir().glob(f"{NAME}-*.*"):  # earlier trees' job images
            old_tag = old.name[len(NAME) + 1 :].split(".")[0]
            if old.suffix in {".tar", ".size"} and old_tag != tag and old_tag.isalnum():
                old.unlink()
        # In buildah's storage too: their archives are gone once imported, so the storage is
        # what remembers them (each about 7 GB).
        drop_other_tags(tool, NAME, tag)
    seconds = time.monotonic() - start
    how = "cached" if cached else f"built in {seconds:.0f} s"
    progress(f"{NAME}: {ref} {_size(tar) / 1e6:.0f} MB ({how})")
    if not import_image:
        return JobImage(ref, tar, _size(tar), seconds, cached, False)
    progress(f"{NAME}: importing {tar.name} into the cluster's containerd")
    ctr_import(tar)
    tar.unlink()  # containerd holds it now, and buildah's storage can write it again
    prune_images({ref}, [f"localhost/mpp/{NAME}:"])  # earlier trees' job images
    return JobImage(ref, tar, _size(tar), time.monotonic() - start, cached, True)


def _say(message: str) -> None:
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mpp.stack.job_image", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--import", dest="import_image", action="store_true", help="load it into the cluster"
    )
    parser.add_argument("--ref", action="store_true", help="print the image's name and exit")
    parser.add_argument(
        "--embedder-tag", help="build on localhost/mpp/embedder:TAG (default: this tree's)"
    )
    args = parser.parse_args(argv)
    if args.ref:
        _say(job_image_ref(embedder_tag=args.embedder_tag))
        return 0
    try:
        image = build(_say, import_image=args.import_image, embedder_tag=args.embedder_tag)
    except ImageError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    _say(image.ref)
    return 0


if __name__ == "__main__":
    sys.exit(main())
