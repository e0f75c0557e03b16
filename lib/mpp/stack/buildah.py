"""buildah with storage of our own, and the Debian base image it builds on (dev tooling).

The base is made once per recipe by mmdebstrap from the machine's own apt sources and imported
with ``buildah from scratch``; buildah keeps its storage under ``<cache>/buildah/<driver>``
(overlay where the kernel allows it, else vfs). mpp.stack.images builds the services' images
with it, mpp.stack.job_image the batch jobs' image.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from mpp.stack.base import Progress, StackError, apt_install, cache_dir

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
RUNROOT = Path("/run/mpp-buildah")


class ImageError(StackError):
    """An image could not be built; the message says where to look."""


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


def run_logged(argv: Sequence[str], what: str, log: Path, progress: Progress | None = None) -> None:
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
        run_logged(
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
        run_logged(tool.argv("add", container, str(tar), "/"), "buildah add", log)
        run_logged(
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
        run_logged(tool.argv("commit", "--rm", container, ref), "buildah commit", log)
    except ImageError:
        tool.ok("rm", container)
        raise
    return ref


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
