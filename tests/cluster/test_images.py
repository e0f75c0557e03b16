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
