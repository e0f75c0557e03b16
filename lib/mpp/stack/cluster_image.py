"""Tiny images written directly as docker-archive tars (what `ctr images import` loads).

No registry serves the pause image here, so the cluster packs its static `pause` program
into a one-layer image itself; tests pack other static programs (busybox) the same way.
The output is deterministic: the same files give the same image id.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path


def _layer(files: Mapping[str, tuple[bytes, int]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        made: set[str] = set()
        for name in sorted(files):
            parts = name.strip("/").split("/")
            for depth in range(1, len(parts)):
                folder = "/".join(parts[:depth])
                if folder not in made:
                    info = tarfile.TarInfo(folder)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tar.addfile(info)
                    made.add(folder)
            content, mode = files[name]
            info = tarfile.TarInfo("/".join(parts))
            info.size = len(content)
            info.mode = mode
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def image_tar(
    name: str,
    files: Mapping[str, tuple[bytes, int]],
    entrypoint: Sequence[str],
    cmd: Sequence[str] = (),
) -> bytes:
    """A docker-archive (``docker save`` layout) of one layer holding ``files``.

    ``files`` maps a path in the image to (content, mode); ``name`` is the reference the
    image gets when imported, e.g. ``localhost/mpp/pause:3.10``.
    """
    layer = _layer(files)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Entrypoint": list(entrypoint),
            "Cmd": list(cmd) or None,
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "mpp cluster_image"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    layer_name = diff_id.removeprefix("sha256:") + "/layer.tar"
    manifest = [{"Config": config_name, "RepoTags": [name], "Layers": [layer_name]}]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member, content in (
            (config_name, config_bytes),
            (layer_name, layer),
            ("manifest.json", json.dumps(manifest).encode()),
        ):
            if "/" in member:
                folder = tarfile.TarInfo(member.split("/")[0])
                folder.type = tarfile.DIRTYPE
                folder.mode = 0o755
                tar.addfile(folder)
            info = tarfile.TarInfo(member)
            info.size = len(content)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


def write_program_image(tar_path: Path, name: str, program: Path, cmd: Sequence[str] = ()) -> Path:
    """Pack one static program as /<its name> (the entrypoint) into ``tar_path``."""
    files = {f"/{program.name}": (program.read_bytes(), 0o755)}
    tar_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tar_path.with_suffix(".tmp")
    tmp.write_bytes(image_tar(name, files, [f"/{program.name}"], cmd))
    tmp.replace(tar_path)
    return tar_path
