"""`mpp cluster up` where it cannot run says why and what to do, before touching anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from mpp.stack import cluster_up
from mpp.stack.base import StackError


def test_not_root_names_the_reason_and_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster_up, "running_as_root", lambda: False)
    with pytest.raises(StackError, match=r"needs root .*sudo .venv/bin/mpp cluster up"):
        cluster_up.preflight(lambda message: None)


def test_no_cgroups_names_the_reason_and_the_way_out(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(cluster_up, "running_as_root", lambda: True)
    real = cluster_up.Path

    def fake_path(*parts: str) -> Path:
        path = real(*parts)
        return tmp_path / "no-cgroups" if str(path) == "/sys/fs/cgroup" else path

    monkeypatch.setattr(cluster_up, "Path", fake_path)
    with pytest.raises(StackError, match=r"no cgroup filesystem .* VM or a privileged container"):
        cluster_up.preflight(lambda message: None)
