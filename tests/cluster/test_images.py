"""The six images from the inside (scripts/images/check.sh, with buildah; no engine needed):
each runs as uid 10001, imports its service, holds no compiler and no dev tooling, runs the
migrations CLI; only the embedder has torch, and its packaged model encodes offline."""

from __future__ import annotations

import subprocess

import pytest

from mpp.stack.images import image_ref
from mpp.stack.services import SERVICES
from tests.deploy.dockerfile import REPO

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]


def test_every_image_passes_the_inside_checks() -> None:
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "images" / "check.sh")],
        capture_output=True,
        text=True,
        timeout=850,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "FAIL" not in result.stdout
    for service in SERVICES:
        assert f"== {service} ({image_ref(service)})" in result.stdout
    assert result.stdout.count("torch: yes") == 1
    assert "encode([hello]) -> (1, 384)" in result.stdout


def test_an_earlier_trees_build_leaves_buildahs_storage() -> None:
    """drop_other_tags removes the other tags of a name and keeps the current one (an earlier
    tree's embedder or job image left in the storage held about 7 GB each)."""
    from mpp.stack.images import base_ref, buildah, built_refs, drop_other_tags

    tool = buildah()
    assert tool.has_image(base_ref()), "the images step builds the base first"
    name = "test-prune"
    refs = [f"localhost/mpp/{name}:{tag}" for tag in ("earlier1", "earlier2", "current")]
    for ref in refs:
        assert tool.ok("tag", base_ref(), ref)
    try:
        assert set(refs) <= set(built_refs(tool))
        assert sorted(drop_other_tags(tool, name, "current")) == refs[:2]
        left = built_refs(tool)
        assert refs[2] in left and not set(refs[:2]) & set(left)
        assert tool.has_image(base_ref()), "the shared layers stay"
    finally:
        for ref in refs:
            tool.ok("rmi", ref)
