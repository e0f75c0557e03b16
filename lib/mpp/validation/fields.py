"""The fields of an event that validation checks: id and token patterns (shared with the
stores' guards), metadata limits, and the normalization of message text.

Match ids and tokens whole with ``fullmatch`` (see mpp.validation's docstring).
"""

from __future__ import annotations

import re
import unicodedata

from mpp.catalog import CAMPAIGN_ID_PATTERN, CHANNEL_PATTERN, LOCALE_PATTERN
from mpp.codecs import Rejection
from mpp.v1 import events_pb2

USER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@\-]{0,127}$"
MESSAGE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$"
# Use these with fullmatch (see the module's docstring).
USER_ID = re.compile(USER_ID_PATTERN)
MESSAGE_ID = re.compile(MESSAGE_ID_PATTERN)


def stored_ids_rejection(user_id: str, message_id: str, prefix: str = "") -> Rejection | None:
    """A record past ingest whose ids ingest would refuse: a row written with them could never
    be read or erased through the APIs. ``prefix`` names where the ids sit (``message.``)."""
    if not USER_ID.fullmatch(user_id):
        return Rejection(
            events_pb2.ERROR_CODE_USER_ID_INVALID,
            f"{prefix}user_id",
            f"{prefix}user_id {user_id[:80]!r} does not match {USER_ID.pattern}; ingest refuses it",
        )
    if not MESSAGE_ID.fullmatch(message_id):
        return Rejection(
            events_pb2.ERROR_CODE_SCHEMA_INVALID,
            f"{prefix}message_id",
            f"{prefix}message_id {message_id[:80]!r} does not match {MESSAGE_ID.pattern}",
        )
    return None


CAMPAIGN_ID = re.compile(CAMPAIGN_ID_PATTERN)
CHANNEL = re.compile(CHANNEL_PATTERN)
LOCALE = re.compile(LOCALE_PATTERN)
MAX_METADATA_KEYS = 32
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 1024

_WHITESPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """NFC, no control or zero-width characters, single spaces, no leading/trailing space."""
    chars = []
    for ch in unicodedata.normalize("NFC", text):
        category = unicodedata.category(ch)
        if category in ("Cc", "Zl", "Zp"):  # tabs, newlines, other controls: a space
            chars.append(" ")
        elif category == "Cf" and ch != "\u200d":  # zero-width and bidi marks: dropped
            continue  # (the zero-width joiner stays: it holds emoji sequences together)
        else:
            chars.append(ch)
    # NFC again: a dropped character may have stood between a letter and its combining mark
    # ("e", zero-width space, acute), which compose only now; without this, normalizing the
    # result again changed it, and so did the message id derived from it (found by tests/fuzz).
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", "".join(chars))).strip()
