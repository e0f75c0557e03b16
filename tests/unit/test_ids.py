"""Keyed hashes (mpp.ids): derived ids and the ledger's user hash depend on MPP_IDS__HMAC_KEY,
so a guessed text or user id cannot be confirmed without it; production refuses the default."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import SecretStr, ValidationError

from mpp.config import DEVELOPMENT_HMAC_KEY, IdSettings, Settings
from mpp.ids import (
    all_keys,
    current_key,
    derive_feedback_id,
    derive_message_id,
    user_hash,
    user_hashes,
)

K1, K2 = b"1" * 32, b"2" * 32


def test_a_message_id_cannot_be_confirmed_from_the_text_without_the_key() -> None:
    parts = ("u1", 1_780_000_000_000, "my card is 4111 1111 1111 1111")
    with_k1 = derive_message_id(*parts, key=K1)
    assert with_k1 == derive_message_id(*parts, key=K1)  # stable: replays get the same id
    assert with_k1.startswith("m-") and len(with_k1) == 34
    assert with_k1 != derive_message_id(*parts, key=K2)  # a new key is a new id space
    # The old, unkeyed id (what anyone could compute from a guessed text) is not it.
    unkeyed = hashlib.sha256("\x1f".join(("u1", str(parts[1]), parts[2])).encode()).hexdigest()
    assert with_k1 != "m-" + unkeyed[:32]
    assert derive_message_id("u1", parts[1], "other text", key=K1) != with_k1


def test_each_kind_of_hash_has_its_own_label() -> None:
    assert derive_feedback_id("u1", "c1", "click", 5, key=K1).startswith("f-")
    assert user_hash("u1", K1) != user_hash("u1", K2)
    assert len(user_hash("u1", K1)) == 64
    # The same input under another label never gives the same digest.
    assert derive_message_id("u1", 5, "x", key=K1)[2:] != user_hash("u1", K1)[:32]


def test_the_key_comes_from_the_settings_and_previous_keys_are_still_matched() -> None:
    settings = Settings(
        ids=IdSettings(hmac_key=SecretStr("n" * 20), previous_hmac_keys=[SecretStr("o" * 20)])
    )
    assert current_key(settings) == b"n" * 20
    assert all_keys(settings) == [b"n" * 20, b"o" * 20]
    assert user_hashes("u1", settings) == [user_hash("u1", b"n" * 20), user_hash("u1", b"o" * 20)]


def test_production_refuses_the_development_key_and_short_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MPP_ENVIRONMENT", "production")
    monkeypatch.setenv("MPP_NEO4J__PASSWORD", "x" * 12)
    monkeypatch.setenv("MPP_POSTGRES__PASSWORD", "y" * 12)
    with pytest.raises(ValidationError, match="MPP_IDS__HMAC_KEY"):
        Settings()
    monkeypatch.setenv("MPP_IDS__HMAC_KEY", DEVELOPMENT_HMAC_KEY)
    with pytest.raises(ValidationError, match="development ids key"):
        Settings()
    monkeypatch.setenv("MPP_IDS__HMAC_KEY", "short")
    with pytest.raises(ValidationError, match="at least 16 bytes"):
        Settings()
    monkeypatch.setenv("MPP_IDS__HMAC_KEY", "k" * 32)
    assert Settings().ids.hmac_key.get_secret_value() == "k" * 32
