"""The recommender's request checks, shared by both front doors (gRPC and HTTP).

Each check returns the value to use or raises ``InvalidArgument`` naming the field and the fix;
``Unavailable`` is the other error a caller sees (retry later).
"""

from __future__ import annotations

from mpp.validation import CHANNEL, LOCALE, USER_ID

MAX_LIMIT = 100


class InvalidArgument(ValueError):
    """Bad input: names the field and the fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class Unavailable(RuntimeError):
    """The request cannot be honoured now (Kafka down for feedback or erasure); retry."""


def check_user_id(user_id: str, field: str = "user_id") -> str:
    if not user_id:
        raise InvalidArgument(field, "is required; pass the user's id")
    if not USER_ID.fullmatch(user_id):
        raise InvalidArgument(
            field,
            f"{user_id[:80]!r} is not a user id: use 1-128 characters of letters, digits and "
            "._:@- starting with a letter or digit",
        )
    return user_id


def check_limit(limit: int, default: int) -> int:
    if limit < 0 or limit > MAX_LIMIT:
        raise InvalidArgument(
            "limit", f"{limit} is out of range: use 1-{MAX_LIMIT}, or 0 for the default"
        )
    return limit or default


def check_target(channel: str, locale: str) -> None:
    """The request's channel and locale, as events carry them (mpp.validation)."""
    if channel and not CHANNEL.fullmatch(channel):
        raise InvalidArgument(
            "channel", f"{channel[:40]!r} must be a short lowercase token like 'web' or 'in_app'"
        )
    if locale and not LOCALE.fullmatch(locale):
        raise InvalidArgument(
            "locale", f"{locale[:40]!r} must be a BCP 47 tag like 'en' or 'pt-BR'"
        )
