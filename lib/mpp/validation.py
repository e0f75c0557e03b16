"""Validation, normalization and PII redaction of raw conversation events.

Shared by the stream (the ingest service) and the batch path, so both accept the same events
and derive the same ids. Pure functions: no I/O, time passed in.

Order of work, and why:
1. user_id and message are checked and the text normalized (Unicode NFC, control and
   zero-width characters removed, whitespace collapsed);
2. the message_id is the producer's, else derived from the *normalized, unredacted* text, so
   switching redaction on or off never changes an id;
3. PII is redacted last: e-mail addresses, card numbers (13 to 19 digits passing the Luhn
   check) and phone numbers become ``[email]``, ``[card]``, ``[phone]``.

Ids and tokens are matched whole with ``fullmatch``: with ``match``, the ``$`` of a pattern
also matches just before a final newline, so "u1" followed by a newline would pass as a user
id. The pattern strings keep ``^...$`` because pydantic compiles them with Rust's regex
engine, where ``$`` is the end of the text (and the ``Z`` escape of Python's ``re`` is unknown).

Redaction takes time linear in the text, since a message may be written to make a regex
engine backtrack: the card and phone patterns repeat a bounded number of times from a start
their look-behinds allow once per run of digits, and ``email_spans`` tries e-mail addresses
from the start of each run of the characters they are made of, not from every character.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta

from mpp.catalog import CAMPAIGN_ID_PATTERN, CHANNEL_PATTERN, LOCALE_PATTERN
from mpp.codecs import Rejection, event_time
from mpp.config import IngestSettings
from mpp.ids import derive_message_id
from mpp.v1 import events_pb2

USER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@\-]{0,127}$"
MESSAGE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$"
# Use these with fullmatch (see the module's docstring).
USER_ID = re.compile(USER_ID_PATTERN)
MESSAGE_ID = re.compile(MESSAGE_ID_PATTERN)
CAMPAIGN_ID = re.compile(CAMPAIGN_ID_PATTERN)
CHANNEL = re.compile(CHANNEL_PATTERN)
LOCALE = re.compile(LOCALE_PATTERN)
MAX_METADATA_KEYS = 32
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 1024

_WHITESPACE = re.compile(r"\s+")

# ``EMAIL.sub`` alone would retry the unbounded local part from every character of a long run
# of local characters (letters, digits, dots...), quadratic in the run's length; email_spans
# finds the same matches in linear time.
_EMAIL_LOCAL = r"[A-Za-z0-9._%+\-]"
EMAIL = re.compile(_EMAIL_LOCAL + r"+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
# The same, starting only where a run of local characters starts.
_EMAIL_AT_RUN_START = re.compile(f"(?<!{_EMAIL_LOCAL}){EMAIL.pattern}")
# 13-19 digits, optionally grouped by single spaces or dashes.
CARD_CANDIDATE = re.compile(r"(?<![\d\-])\d(?:[ \-]?\d){12,18}(?![\d\-])")
# International (+CC ...) or national numbers with at least 9 digits, separators allowed.
# The lookarounds keep it from matching part of a longer digit sequence.
PHONE = re.compile(
    r"(?<![\w+])(?<!\d[ .\-])(?:\+\d{1,3}[ .\-]?)?(?:\(\d{1,4}\)[ .\-]?)?"
    r"\d(?:[ .\-]?\d){6,13}(?![ .\-]?\d)(?!\w)"
)


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
    return _WHITESPACE.sub(" ", "".join(chars)).strip()


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def email_spans(text: str) -> list[tuple[int, int]]:
    """The (start, end) of each match that ``EMAIL.finditer`` gives, in time linear in the text.

    A match's local part cannot contain an ``@`` and runs up to the match's ``@``, so whether a
    start succeeds depends only on the run of local characters it is in: trying the first
    character of each run is enough (``_EMAIL_AT_RUN_START``). The one other start that
    ``finditer`` tries is the end of the previous match, which may lie inside a run
    (``a@b.com.c@d.org``): that one is tried with ``EMAIL.match`` before searching further.
    """
    spans: list[tuple[int, int]] = []
    found = _EMAIL_AT_RUN_START.search(text)
    while found is not None:
        spans.append(found.span())
        found = EMAIL.match(text, found.end()) or _EMAIL_AT_RUN_START.search(text, found.end())
    return spans


def redact_pii(text: str) -> tuple[str, list[str]]:
    """Replace e-mail addresses, card numbers and phone numbers; returns the kinds found."""
    kinds: list[str] = []

    def mark(kind: str) -> str:
        if kind not in kinds:
            kinds.append(kind)
        return f"[{kind}]"

    parts: list[str] = []
    done = 0
    for start, end in email_spans(text):
        parts += [text[done:start], mark("email")]
        done = end
    text = "".join([*parts, text[done:]])

    def card(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group(0))
        return mark("card") if 13 <= len(digits) <= 19 and luhn_valid(digits) else match.group(0)

    text = CARD_CANDIDATE.sub(card, text)

    def phone(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group(0))
        # Long digit runs without any separator or "+" are more often ids or amounts.
        looks_like_phone = match.group(0).startswith(("+", "(")) or not match.group(0).isdigit()
        return mark("phone") if 9 <= len(digits) <= 15 and looks_like_phone else match.group(0)

    text = PHONE.sub(phone, text)
    return text, kinds


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
    if not USER_ID.fullmatch(user_id):
        raise _invalid(
            E.ERROR_CODE_USER_ID_INVALID,
            "user_id",
            f"user_id {user_id[:80]!r} must be 1-128 characters of letters, digits and ._:@- "
            "starting with a letter or digit",
        )
    text = normalize_text(event.message)
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
        if not MESSAGE_ID.fullmatch(event.message_id):
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
        if not CAMPAIGN_ID.fullmatch(event.campaign_id):
            raise _invalid(
                E.ERROR_CODE_FIELD_INVALID,
                "campaign_id",
                f"campaign_id {event.campaign_id[:80]!r} is not a catalog id "
                "(letters, digits and ._:- , at most 128)",
            )
        out.campaign_id = event.campaign_id
    if event.HasField("channel") and event.channel:
        channel = event.channel.strip().lower()
        if not CHANNEL.fullmatch(channel):
            raise _invalid(
                E.ERROR_CODE_FIELD_INVALID,
                "channel",
                f"channel {event.channel[:40]!r} must be a short token like 'web' or 'in_app'",
            )
        out.channel = channel
    if event.HasField("locale") and event.locale:
        if not LOCALE.fullmatch(event.locale):
            raise _invalid(
                E.ERROR_CODE_FIELD_INVALID,
                "locale",
                f"locale {event.locale[:40]!r} must be a BCP 47 tag like 'en' or 'pt-BR'",
            )
        out.locale = event.locale
    if len(event.metadata) > MAX_METADATA_KEYS:
        raise _invalid(
            E.ERROR_CODE_FIELD_INVALID,
            "metadata",
            f"metadata has {len(event.metadata)} keys; at most {MAX_METADATA_KEYS}",
        )
    for key, value in event.metadata.items():
        if len(key) > MAX_METADATA_KEY_CHARS or len(value) > MAX_METADATA_VALUE_CHARS:
            raise _invalid(
                E.ERROR_CODE_FIELD_INVALID,
                f"metadata.{key[:40]}",
                f"metadata keys are at most {MAX_METADATA_KEY_CHARS} characters and values "
                f"at most {MAX_METADATA_VALUE_CHARS}",
            )
        out.metadata[key] = value
    if rules.redact:
        text, kinds = redact_pii(text)
        out.redactions.extend(kinds)
    out.text = text
    return out
