"""mpp.stack.images without building anything: the base's apt sources and the tree's tag."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mpp.stack import images
from mpp.stack.services import SERVICES


def test_apt_sources_reads_deb822_and_one_line_files(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.invalid/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb-src\nURIs: http://mirror.invalid/debian\nSuites: bookworm\n"
        "Components: main\n"
    )
    (tmp_path / "sources.list.d" / "other.list.disabled").write_text(
        "deb http://elsewhere.invalid/x bookworm main\n"
    )
    (tmp_path / "sources.list").write_text(
        "deb [arch=amd64] http://mirror.invalid/security bookworm-security main\n"
        "deb http://mirror.invalid/old bullseye main\n"
    )
    assert images.apt_sources(tmp_path) == [
        "deb http://mirror.invalid/security bookworm-security main",
        "deb http://mirror.invalid/debian bookworm main",
        "deb http://mirror.invalid/debian bookworm-updates main",
    ]


def test_apt_sources_needs_a_bookworm_source(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text("deb http://mirror.invalid/old bullseye main\n")
    with pytest.raises(images.ImageError, match="no apt source"):
        images.apt_sources(tmp_path)


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    for name in images.TREE_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)
    (root / "lib/mpp/stack").mkdir(parents=True)
    (root / "lib/mpp/stack/x.py").write_text("dev")
    (root / "lib/mpp/core.py").write_text("core")
    (root / "services/a/m").mkdir(parents=True)
    (root / "services/a/m/__init__.py").write_text("")
    return root


def test_the_tag_follows_what_goes_into_the_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(images, "base_key", lambda: "0" * 12)
    root = _tree(tmp_path)
    tag = images.tree_tag(root)
    assert len(tag) == 12 and tag == images.tree_tag(root)
    # Dev tooling and bytecode are not in the images: they change no tag.
    (root / "lib/mpp/stack/x.py").write_text("changed")
    (root / "lib/mpp/__pycache__").mkdir()
    (root / "lib/mpp/__pycache__/core.cpython-311.pyc").write_bytes(b"\0")
    (root / "lib/NOTES.md").write_text("documentation only")
    assert images.tree_tag(root) == tag
    (root / "lib/mpp/core.py").write_text("changed")
    assert images.tree_tag(root) != tag
    shutil.rmtree(root)
    root = _tree(tmp_path)
    (root / "uv.lock").write_text("changed")
    assert images.tree_tag(root) != tag


def test_image_ref_names_every_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "base_key", lambda: "0" * 12)
    tag = images.tree_tag()
    for service in SERVICES:
        assert images.image_ref(service) == f"localhost/mpp/{service}:{tag}"
    with pytest.raises(ValueError, match="unknown service"):
        images.image_ref("nope")
