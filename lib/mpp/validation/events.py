"""Validation of one raw conversation event into a ValidatedMessage, or a Rejection that names
the error code, the field and the fix (the ingest service dead-letters it with that reason)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from mpp.codecs import Rejection, event_time
from mpp.config import IngestSettings
from mpp.ids import derive_message_id
from mpp.v1 import events_pb2
from mpp.validation import fields
from mpp.validation.redaction import redact_pii


@dataclass(frozen=True)
class Rules:
    max_message_chars: int
    oldest: datetime
    max_future_skew: timedelta
    redact: bool

    @classmethod
    def from_settings(cls, settings: IngestSettings) -> Rules:
        return cls(
            max_message_chars=settings.max_message_chars,
            oldest=settings.oldest_timestamp,
            max_future_skew=timedelta(seconds=settings.max_future_skew_s),
            redact=settings.redact_pii,
        )


def _invalid(code: int, field: str, detail: str) -> Rejection:
    return Rejection(code, field, detail)


def validate_event(
    event: events_pb2.RawConversationEvent, rules: Rules, now: datetime
) -> events_pb2.ValidatedMessage:
    """A ValidatedMessage, or Rejection naming the code, the field and the fix.

    ``now`` must be timezone-aware. ``source`` and ``ingested_at`` are left to the caller.
    """
    E = events_pb2
    user_id = event.user_id.strip()
    if not user_id:
        raise _invalid(E.ERROR_CODE_USER_ID_MISSING, "user_id", "user_id is required")
    if not fields.USER_ID.fullmatch(user_id):
        raise _invalid(
            E.ERROR_CODE_USER_ID_INVALID,
            "user_id",
            f"user_id {user_id[:80]!r} must be 1-128 characters of letters, digits and ._:@- "
            "starting with a letter or digit",
        )
    text = fields.normalize_text(event.message)
    if not text:
        raise _invalid(
            E.ERROR_CODE_MESSAGE_EMPTY,
            "message",
            "message is empty after normalization (whitespace and control characters removed)",
        )
    if len(text) > rules.max_message_chars:
        raise _invalid(
            E.ERROR_CODE_MESSAGE_TOO_LONG,
            "message",
            f"message has {len(text)} characters; the limit is {rules.max_message_chars} "
            "(MPP_INGEST__MAX_MESSAGE_CHARS)",
        )
    if not event.HasField("timestamp"):
        raise _invalid(
            E.ERROR_CODE_TIMESTAMP_MISSING,
            "timestamp",
            "timestamp is required: RFC 3339 with a zone, or epoch milliseconds",
        )
    timestamp = event_time(event.timestamp, "timestamp")
    if timestamp < rules.oldest:
        raise _invalid(
            E.ERROR_CODE_TIMESTAMP_TOO_OLD,
            "timestamp",
            f"timestamp {timestamp.isoformat()} is before {rules.oldest.isoformat()} "
            "(MPP_INGEST__OLDEST_TIMESTAMP); is it in seconds instead of milliseconds?",
        )
    if timestamp > now + rules.max_future_skew:
        raise _invalid(
            E.ERROR_CODE_TIMESTAMP_IN_FUTURE,
            "timestamp",
            f"timestamp {timestamp.isoformat()} is more than "
            f"{rules.max_future_skew.total_seconds():.0f}s ahead of the server clock "
            "(MPP_INGEST__MAX_FUTURE_SKEW_S)",
        )
    out = E.ValidatedMessage(user_id=user_id)
    out.timestamp.CopyFrom(event.timestamp)

    if event.HasField("message_id"):
        if not fields.MESSAGE_ID.fullmatch(event.message_id):
            raise _invalid(
                E.ERROR_CODE_FIELD_INVALID,
                "message_id",
                f"message_id {event.message_id[:80]!r} must be 1-128 letters, digits or ._:- "
                "(or leave it out to have one derived)",
            )
        out.message_id = event.message_id
    else:
        out.message_id = derive_message_id(user_id, event.timestamp.ToMilliseconds(), text)
        out.message_id_derived = True
    if event.HasField("campaign_id") and event.campaign_id:
        if not fields.CAMPAIGN_ID.fullmatch(event.campaign_id):
            raise _invalid(
                E.ERROR_CODE_FIELD_INVALID,
                "campaign_id",
                f"campaign_id {event.campaign_id[:80]!r} is not a catalog id "
                "(letters, digits and ._:- , at most 128)",
            )
        out.campaign_id = event.campaign_id
    if event.HasField("channel") and event.channel:
        channel = event.channel.strip().lower()
        if not fields.CHANNEL.fullmatch(channel):
            raise _invalid(
                E.ERROR_CODE_FIELD_INVALID,
                "channel",
                f"channel {event.channel[:40]!r} must be a short token like 'web' or 'in_app'",
            )
        out.channel = channel
    if event.HasField("locale") and event.locale:
        if not fields.LOCALE.fullmatch(event.locale):
            raise _invalid(
                E.ERROR_CODE_FIELD_INVALID,
                "locale",
                f"locale {event.locale[:40]!r} must be a BCP 47 tag like 'en' or 'pt-BR'",
            )
        out.locale = event.locale
    if len(event.metadata) > fields.MAX_METADATA_KEYS:
        raise _invalid(
            E.ERROR_CODE_FIELD_INVALID,
            "metadata",
            f"metadata has {len(event.metadata)} keys; at most {fields.MAX_METADATA_KEYS}",
        )
    for key, value in event.metadata.items():
        if len(key) > fields.MAX_METADATA_KEY_CHARS or len(value) > fields.MAX_METADATA_VALUE_CHARS:
            raise _invalid(
                E.ERROR_CODE_FIELD_INVALID,
                f"metadata.{key[:40]}",
                f"metadata keys are at most {fields.MAX_METADATA_KEY_CHARS} characters and values "
                f"at most {fields.MAX_METADATA_VALUE_CHARS}",
            )
        out.metadata[key] = value
    if rules.redact:
        text, kinds = redact_pii(text)
        out.redactions.extend(kinds)
        # "[email]" is one character longer than the shortest address ("a@b.cd"), and the
        # consumers refuse a text over the limit (the embedder dead-letters it): found by
        # tests/fuzz, a message at the limit would pass here and be lost there.
        if len(text) > rules.max_message_chars:
            raise _invalid(
                E.ERROR_CODE_MESSAGE_TOO_LONG,
                "message",
                f"message has {len(text)} characters once its PII is replaced by placeholders "
                f"like [email]; the limit is {rules.max_message_chars} "
                "(MPP_INGEST__MAX_MESSAGE_CHARS)",
            )
    out.text = text
    return out
