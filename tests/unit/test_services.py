"""How the local process manager configures the services it starts."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from mpp.auth import Caller, KeyRing, key_digest
from mpp.config import AuthSettings, Settings
from mpp.stack.services import ServiceProcess, local_api_key


def test_local_api_key_is_made_once_private_and_stable(tmp_path: Path) -> None:
    key = local_api_key(tmp_path)
    assert len(key) >= 40
    assert local_api_key(tmp_path) == key
    assert stat.S_IMODE((tmp_path / "recommender.key").stat().st_mode) == 0o600
    assert local_api_key(tmp_path / "other") != key


def test_the_keyed_services_get_the_local_key_unless_keys_are_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MPP_AUTH__KEYS", raising=False)
    settings = Settings()
    key = local_api_key(tmp_path / "services")
    for name in ("recommender", "analytics"):
        env = ServiceProcess(name, settings, tmp_path, tmp_path).environment()
        # Only the key's SHA-256 travels, as the admin key "local".
        (entry,) = json.loads(env["MPP_AUTH__KEYS"])
        assert entry == {"name": "local", "sha256": key_digest(key), "scopes": ["admin"]}
        assert key not in env["MPP_AUTH__KEYS"]
        keys = KeyRing(Settings(auth=AuthSettings.model_validate({"keys": [entry]})).auth)
        assert keys.authorize(key, "users:erase", "erase users") == Caller(
            "local", frozenset({"admin"})
        )
    recommender = ServiceProcess("recommender", settings, tmp_path, tmp_path)
    assert recommender.environment()["MPP_HTTP__PORT"] == "18086"
    # Other services never see it.
    assert (
        "MPP_AUTH__KEYS" not in ServiceProcess("ingest", settings, tmp_path, tmp_path).environment()
    )
    # An operator's keys win.
    monkeypatch.setenv("MPP_AUTH__KEYS", "[]")
    assert recommender.environment()["MPP_AUTH__KEYS"] == "[]"
