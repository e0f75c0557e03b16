"""Stable identifiers, shared by the stream (ingest) and the batch path (Spark).

``message_id``: the producer's own id when it gives one; otherwise derived from
(user_id, timestamp in epoch milliseconds UTC, normalized text before PII redaction), so that
the same event replayed any number of times, on either path, gets the same id.
"""

from __future__ import annotations

import hashlib

# Unit separator: cannot appear in a user_id, and is stripped from normalized text.
_SEP = "\x1f"
DERIVED_PREFIX = "m-"


def derive_message_id(user_id: str, timestamp_ms: int, normalized_text: str) -> str:
    """``m-`` and 32 hex characters of SHA-256 over the three parts (128 bits)."""
    digest = hashlib.sha256(
        _SEP.join((user_id, str(timestamp_ms), normalized_text)).encode("utf-8")
    ).hexdigest()
    return DERIVED_PREFIX + digest[:32]


def derive_feedback_id(user_id: str, campaign_id: str, kind: str, timestamp_ms: int) -> str:
    digest = hashlib.sha256(
        _SEP.join((user_id, campaign_id, kind, str(timestamp_ms))).encode("utf-8")
    ).hexdigest()
    return "f-" + digest[:32]
