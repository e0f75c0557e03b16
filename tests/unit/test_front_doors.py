"""The front doors' keys without a server: keys kept as SHA-256, scopes, the token bucket, the
keys presented in headers and gRPC metadata, and `mpp keys new`. The guard driven by hand is in
test_front_door_guard.py; the apps behind it in test_front_door_apps.py."""

from __future__ import annotations

import base64
import json

import pytest
from mpp_recommender.grpc_api import metadata_key
from pydantic import ValidationError
from typer.testing import CliRunner

from mpp.auth import (
    ANONYMOUS,
    BAD_KEY,
    MISSING_KEYS,
    NO_KEY,
    Caller,
    Denial,
    KeyRing,
    TokenBucket,
    bearer,
    key_digest,
    key_entry,
    new_key,
)
from mpp.config import Settings
from mpp.http_guard import presented_key

from .front_door_keys import ADMIN, KEYS, READ, SLOW, WRITE, auth


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- keys, scopes, buckets ------------------------------------------------------------------


def test_new_keys_are_random_and_only_their_sha256_is_configured() -> None:
    key = new_key()
    assert key.startswith("mpp_") and len(key) > 40 and new_key() != key
    entry = key_entry("ops", key, ["admin"])
    assert entry == {"name": "ops", "sha256": key_digest(key), "scopes": ["admin"]}
    assert key not in json.dumps(entry) and len(entry["sha256"]) == 64
    with_rate = key_entry("ops", key, ["admin"], rate_per_s=5, burst=7)
    assert (with_rate["rate_per_s"], with_rate["burst"]) == (5, 7)
    for bad in (
        {"name": "ops", "sha256": "xyz", "scopes": ["admin"]},
        {"name": "ops", "sha256": key_digest(key), "scopes": ["root"]},
        {"name": "ops", "sha256": key_digest(key), "scopes": []},
        {"name": "with space", "sha256": key_digest(key), "scopes": ["admin"]},
    ):
        with pytest.raises(ValidationError):
            auth(bad)
    with pytest.raises(ValidationError, match="appear twice"):
        auth(entry, key_entry("ops", "other", ["admin"]))


def test_settings_read_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = key_entry("ci", "the-key", ["feedback:write"])
    monkeypatch.setenv("MPP_AUTH__KEYS", json.dumps([entry]))
    monkeypatch.setenv("MPP_HTTP__MAX_BODY_BYTES", "4096")
    settings = Settings()
    assert settings.auth.enabled is True
    assert settings.auth.keys[0].name == "ci" and settings.auth.keys[0].rate_per_s == 100
    assert settings.http.max_body_bytes == 4096
    assert not hasattr(settings.recommender, "api_keys")


def test_keys_scopes_and_admin() -> None:
    keys = KeyRing(KEYS)
    assert keys.authorize(READ, "recommendations:read", "x") == Caller(
        "reader", frozenset({"recommendations:read", "analytics:read"})
    )
    assert keys.authorize(None, "recommendations:read", "x") == Denial(401, NO_KEY)
    assert keys.authorize("", None, "x") == Denial(401, NO_KEY)
    assert keys.authorize("k-reaD", None, "x") == Denial(401, BAD_KEY)
    # The digest of a key is not the key.
    assert keys.authorize(key_digest(READ), None, "x") == Denial(401, BAD_KEY)
    denied = keys.authorize(READ, "users:erase", "erase users")
    assert isinstance(denied, Denial) and denied.status == 403
    assert "'reader' may not erase users" in denied.message and "users:erase" in denied.message
    for scope in ("recommendations:read", "feedback:write", "users:erase", "analytics:read"):
        assert isinstance(keys.authorize(ADMIN, scope, "x"), Caller)  # type: ignore[arg-type]
    assert isinstance(keys.authorize(WRITE, None, "x"), Caller)  # any valid key
    assert KeyRing(auth()).authorize(ADMIN, None, "x") == Denial(401, MISSING_KEYS)
    # Authentication off: anyone, with every scope, and no rate limit.
    off = KeyRing(auth(enabled=False))
    assert off.authorize(None, "admin", "x") == ANONYMOUS


def test_token_bucket_allows_bursts_then_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate_per_s=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)  # one token in 1/2 s
    assert bucket.take(0.25) == pytest.approx(0.25)  # a refused request takes nothing
    assert bucket.take(0.5) == 0.0
    # A long pause refills to the burst, not beyond.
    assert [bucket.take(100.0) for _ in range(4)][-1] == pytest.approx(0.5)
    # A clock that steps back gives nothing.
    assert bucket.take(50.0) > 0


def test_rate_limit_per_key_with_retry_after() -> None:
    clock = Clock()
    keys = KeyRing(KEYS, clock=clock)
    assert all(isinstance(keys.authorize(SLOW, None, "x"), Caller) for _ in range(2))
    limited = keys.authorize(SLOW, None, "x")
    assert isinstance(limited, Denial) and limited.status == 429
    assert limited.retry_after_s == pytest.approx(1.0) and limited.retry_after == "1"
    assert "'slow' is over its rate limit (1 requests/s, bursts of 2" in limited.message
    # Other keys have buckets of their own.
    assert isinstance(keys.authorize(READ, None, "x"), Caller)
    # A refused scope takes no token: the key is not slowed by its mistakes.
    clock.now += 1.0
    assert keys.authorize(SLOW, "users:erase", "x").status == 403  # type: ignore[union-attr]
    assert isinstance(keys.authorize(SLOW, None, "x"), Caller)
    assert Denial(429, "", 0.01).retry_after == "1" and Denial(429, "", 2.1).retry_after == "3"


def test_keys_from_headers_and_metadata() -> None:
    basic = base64.b64encode(b"anyone:" + READ.encode())
    assert presented_key([(b"x-api-key", READ.encode())]) == READ
    assert presented_key([(b"authorization", b"Bearer " + READ.encode())]) == READ
    assert presented_key([(b"authorization", b"Basic " + basic)]) == READ
    assert presented_key([(b"authorization", b"Basic %%%")]) is None
    assert presented_key([(b"authorization", b"Digest x")]) is None
    assert presented_key([(b"host", b"x")]) is None
    assert bearer("bearer abc ") == "abc" and bearer("Bearer ") is None and bearer(None) is None
    assert metadata_key((("authorization", f"Bearer {READ}"),)) == READ
    assert metadata_key((("x-api-key", READ),)) == READ
    assert metadata_key((("authorization", "Basic x"),)) is None and metadata_key(None) is None


def test_keys_new_prints_the_key_once_and_its_entry() -> None:
    from mpp.cli import app

    result = CliRunner().invoke(
        app, ["keys", "new", "--name", "ops", "--scopes", "admin", "--json"]
    )
    assert result.exit_code == 0, result.output
    made = json.loads(result.output)
    assert made["entry"] == {"name": "ops", "sha256": key_digest(made["key"]), "scopes": ["admin"]}
    assert KeyRing(auth(made["entry"])).authorize(made["key"], "users:erase", "x") == Caller(
        "ops", frozenset({"admin"})
    )
    text = CliRunner().invoke(
        app, ["keys", "new", "--name", "app", "--scopes", "recommendations:read,feedback:write"]
    )
    assert text.exit_code == 0 and "MPP_AUTH__KEYS" in text.output
    entry = json.loads(text.output.strip().splitlines()[-1])
    assert entry["scopes"] == ["recommendations:read", "feedback:write"]
    bad = CliRunner().invoke(app, ["keys", "new", "--name", "x", "--scopes", "root"])
    assert bad.exit_code == 2
