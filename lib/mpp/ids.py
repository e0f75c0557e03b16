"""Stable identifiers, shared by the stream (ingest) and the batch path (Spark).

``message_id``: the producer's own id when it gives one; otherwise derived from
(user_id, timestamp in epoch milliseconds UTC, normalized text before PII redaction), so that
the same event replayed any number of times, on either path, gets the same id.

Every derived id, and the erasure ledger's name for a user (``user_hash``), is a keyed hash:
HMAC-SHA-256 with ``MPP_IDS__HMAC_KEY`` (``mpp.config.IdSettings``). An unkeyed hash of the
unredacted text would let anyone holding an id confirm a guessed message (or a guessed user
id, from the ledger); without the key that is a brute force of 256 bits. Each kind of hash has
its own label in the hashed bytes, so that one kind can never equal another.

The key is read from the settings of the process (``mpp.config.get_settings``), so that the
ingest service, the Spark driver and its executors (the same Secret in their environment)
derive the same ids. A new key is a new id space: see docs/security.md, "Keyed hashes".
"""

from __future__ import annotations

import hashlib
import hmac

from mpp.config import Settings, get_settings

# Unit separator: cannot appear in a user_id, and is stripped from normalized text.
_SEP = "\x1f"
DERIVED_PREFIX = "m-"


def current_key(settings: Settings | None = None) -> bytes:
    """The key that derives new ids and ledger entries."""
    return (settings or get_settings()).ids.hmac_key.get_secret_value().encode()


def all_keys(settings: Settings | None = None) -> list[bytes]:
    """The current key first, then the previous ones (still matched when reading the ledger)."""
    ids = (settings or get_settings()).ids
    keys = [ids.hmac_key, *ids.previous_hmac_keys]
    return [k.get_secret_value().encode() for k in keys]


def keyed_hex(key: bytes, label: str, *parts: str) -> str:
    """HMAC-SHA-256 over ``label`` and ``parts`` joined by the unit separator, in hex."""
    return hmac.new(key, _SEP.join((label, *parts)).encode("utf-8"), hashlib.sha256).hexdigest()


def derive_message_id(
    user_id: str, timestamp_ms: int, normalized_text: str, key: bytes | None = None
) -> str:
    """``m-`` and 32 hex characters (128 bits) of the keyed hash of the three parts."""
    digest = keyed_hex(key or current_key(), "message", user_id, str(timestamp_ms), normalized_text)
    return DERIVED_PREFIX + digest[:32]


def derive_feedback_id(
    user_id: str, campaign_id: str, kind: str, timestamp_ms: int, key: bytes | None = None
) -> str:
    """``f-`` and 32 hex characters of the keyed hash of the feedback's identity."""
    digest = keyed_hex(
        key or current_key(), "feedback", user_id, campaign_id, kind, str(timestamp_ms)
    )
    return "f-" + digest[:32]


def user_hash(user_id: str, key: bytes | None = None) -> str:
    """How the erasure ledger (``erased_users``) and the erased markers name a user: the keyed
    hash of the UTF-8 user_id, 64 hex characters."""
    return keyed_hex(key or current_key(), "user", user_id)


def user_hashes(user_id: str, settings: Settings | None = None) -> list[str]:
    """The user's name under every key in use (current first): what a ledger lookup matches."""
    return [user_hash(user_id, key) for key in all_keys(settings)]
