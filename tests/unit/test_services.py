"""How the local process manager configures the services it starts."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from mpp.config import Settings
from mpp.stack.services import ServiceProcess, local_api_key


def test_local_api_key_is_made_once_private_and_stable(tmp_path: Path) -> None:
    key = local_api_key(tmp_path)
    assert len(key) >= 40
    assert local_api_key(tmp_path) == key
    assert stat.S_IMODE((tmp_path / "recommender.key").stat().st_mode) == 0o600
    assert local_api_key(tmp_path / "other") != key


def test_the_recommender_gets_the_local_key_unless_keys_are_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings()
    recommender = ServiceProcess("recommender", settings, tmp_path, tmp_path)
    env = recommender.environment()
    assert json.loads(env["MPP_RECOMMENDER__API_KEYS"]) == [local_api_key(tmp_path / "services")]
    assert env["MPP_HTTP__PORT"] == "18086"
    # Other services never see it.
    assert (
        "MPP_RECOMMENDER__API_KEYS"
        not in ServiceProcess("ingest", settings, tmp_path, tmp_path).environment()
    )
    # An operator's keys win.
    monkeypatch.setenv("MPP_RECOMMENDER__API_KEYS", '["theirs"]')
    assert recommender.environment()["MPP_RECOMMENDER__API_KEYS"] == '["theirs"]'
