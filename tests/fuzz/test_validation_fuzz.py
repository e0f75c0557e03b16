"""validate_event fuzzed: any event protobuf can carry is validated or refused with a
Rejection naming a field, never another exception; what is accepted holds the invariants the
consumers rely on (normalized text, whole-matched ids, derived ids independent of redaction,
no PII left that redaction would find)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import StringConstraints, TypeAdapter, ValidationError

from mpp.catalog import CAMPAIGN_ID_PATTERN
from mpp.codecs import Rejection, decode_raw_event, encode
from mpp.v1 import events_pb2 as E
from mpp.validation import (
    CAMPAIGN_ID,
    CHANNEL,
    LOCALE,
    MESSAGE_ID,
    MESSAGE_ID_PATTERN,
    USER_ID,
    USER_ID_PATTERN,
    Rules,
    normalize_text,
    pii_spans,
    redact_pii,
    validate_event,
)

from .strategies import chat_text, fuzz, raw_events

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
RULES = Rules(
    max_message_chars=120,
    oldest=datetime(2000, 1, 1, tzinfo=UTC),
    max_future_skew=timedelta(minutes=5),
    redact=True,
)
FIELDS = {"user_id", "message", "timestamp", "message_id", "campaign_id", "channel", "locale"}


def _validated(event: E.RawConversationEvent, rules: Rules) -> E.ValidatedMessage | None:
    try:
        return validate_event(event, rules, NOW)
    except Rejection as refusal:
        assert refusal.field.split(".")[0] in FIELDS | {"metadata"}, refusal
        assert refusal.code != E.ERROR_CODE_UNSPECIFIED and refusal.detail
        return None


@fuzz(700)
@given(raw_events())
@example(  # at the limit, with an address shorter than "[email]"
    E.RawConversationEvent(
        user_id="u1", message="x" * 113 + " a@b.cd", timestamp=Timestamp(seconds=1_790_000_000)
    )
)
def test_any_event_is_validated_or_refused_with_a_field(event: E.RawConversationEvent) -> None:
    out = _validated(event, RULES)
    if out is None:
        return
    assert USER_ID.fullmatch(out.user_id)
    assert MESSAGE_ID.fullmatch(out.message_id)
    assert not out.campaign_id or CAMPAIGN_ID.fullmatch(out.campaign_id)
    assert not out.channel or CHANNEL.fullmatch(out.channel)
    assert not out.locale or LOCALE.fullmatch(out.locale)
    assert out.text and normalize_text(out.text) == out.text
    assert len(out.text) <= RULES.max_message_chars  # what the embedder takes
    assert redact_pii(out.text) == (out.text, [])  # nothing left to redact
    assert list(out.redactions) == redact_pii(normalize_text(event.message))[1]
    assert RULES.oldest <= out.timestamp.ToDatetime(tzinfo=UTC) <= NOW + RULES.max_future_skew


@fuzz(300)
@given(raw_events())
def test_redaction_changes_neither_the_verdict_nor_the_id(event: E.RawConversationEvent) -> None:
    redacted = _validated(event, RULES)
    plain = _validated(event, Rules(**{**RULES.__dict__, "redact": False}))
    assert (redacted is None) == (plain is None)
    if redacted is not None and plain is not None:
        assert redacted.message_id == plain.message_id
        assert plain.text == normalize_text(event.message)
        assert redacted.text == redact_pii(plain.text)[0]


@fuzz(300)
@given(raw_events())
def test_an_event_is_judged_the_same_after_a_trip_through_the_wire(
    event: E.RawConversationEvent,
) -> None:
    value = encode(event)
    if not value.strip():
        return  # blank bytes are refused before validation (tests/fuzz/test_codecs_fuzz.py)
    assert _validated(decode_raw_event(value), RULES) == _validated(event, RULES)


@fuzz(300)
@given(
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:@\-]{0,40}", fullmatch=True),
    chat_text,
    st.sampled_from(["\n", "\r\n", " ", "\t", "\u200b", "\x00"]),
)
def test_whitespace_and_invisible_characters_make_no_new_message(
    user_id: str, text: str, noise: str
) -> None:
    """The derived id is the normalized text's: padding or doubling spaces changes nothing."""
    at = NOW - timedelta(minutes=1)
    one = E.RawConversationEvent(user_id=user_id, message=text)
    two = E.RawConversationEvent(user_id=user_id, message=noise + text.replace(" ", "  ") + noise)
    for event in (one, two):
        event.timestamp.FromDatetime(at)
    first, second = _validated(one, RULES), _validated(two, RULES)
    if first is None or second is None:
        # Only when the text is empty or too long after normalization, for both alike.
        assert first is None and second is None
        return
    assert (first.message_id, first.text) == (second.message_id, second.text)


@fuzz(300)
@given(chat_text)
@example("e\u200b\u0301")  # composes only once the zero-width space is gone
@example("a\u00a0\u2028b\u3000c\ufeff")
def test_normalization_invariants(text: str) -> None:
    once = normalize_text(text)
    assert normalize_text(once) == once  # idempotent
    assert once == once.strip() and "  " not in once
    assert not any(ch in once for ch in "\n\r\t\x00\u200b\ufeff")
    assert len(pii_spans(once)) == len(pii_spans(normalize_text(" " + text + " ")))


ID_PATTERNS = {
    "user_id": (USER_ID_PATTERN, USER_ID),
    "message_id": (MESSAGE_ID_PATTERN, MESSAGE_ID),
    "campaign_id": (CAMPAIGN_ID_PATTERN, CAMPAIGN_ID),
}


@fuzz(300)
@given(
    st.sampled_from(sorted(ID_PATTERNS)),
    st.one_of(
        st.text(max_size=140),
        st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:@\-]{0,130}[\n\r ]?", fullmatch=True),
    ),
)
def test_ingest_and_the_http_apis_agree_on_ids(name: str, value: str) -> None:
    """The APIs check path ids with pydantic (Rust's regex engine), ingest with Python's re and
    fullmatch: the same ids pass both (a trailing newline neither)."""
    pattern, compiled = ID_PATTERNS[name]
    adapter = TypeAdapter(Annotated[str, StringConstraints(pattern=pattern)])
    try:
        adapter.validate_python(value)
        by_pydantic = True
    except ValidationError:
        by_pydantic = False
    assert by_pydantic == (compiled.fullmatch(value) is not None), (name, value)
