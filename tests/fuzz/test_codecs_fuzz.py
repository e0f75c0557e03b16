"""The raw-event decoders (JSON and protobuf) and the time parsers, fuzzed: whatever the bytes,
the answer is an event or a Rejection (the documented refusal, which the DLQ records), never
another exception; what decodes means what the producer sent."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import assume, example, given
from hypothesis import strategies as st

from mpp.codecs import (
    EARLIEST,
    LATEST,
    Rejection,
    checked_utc,
    decode,
    decode_raw_event,
    encode,
    event_time,
    loads_untrusted,
    parse_timestamp,
)
from mpp.v1 import events_pb2 as E
from mpp.v1 import feedback_pb2 as F

from .strategies import fuzz, int32, int64, json_events, json_values, raw_events

UNDECODABLE_OR_SCHEMA = {
    E.ERROR_CODE_UNDECODABLE,
    E.ERROR_CODE_SCHEMA_INVALID,
    E.ERROR_CODE_TIMESTAMP_INVALID,
}


def _decodes_or_is_refused(value: bytes) -> E.RawConversationEvent | None:
    try:
        return decode_raw_event(value)
    except Rejection as refusal:
        assert refusal.code in UNDECODABLE_OR_SCHEMA, refusal
        assert str(refusal)  # names the code, the field and the fix
        return None


@fuzz(600)
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_are_refused(value: bytes) -> None:
    _decodes_or_is_refused(value)


@fuzz(400)
@given(st.binary(max_size=100).map(lambda tail: b"{" + tail))
def test_any_bytes_starting_like_json_decode_or_are_refused(value: bytes) -> None:
    _decodes_or_is_refused(value)


@fuzz(400)
@given(json_values)
def test_any_json_value_decodes_or_is_refused(value: object) -> None:
    _decodes_or_is_refused(json.dumps(value).encode())


@fuzz(600)
@given(json_events())
def test_json_events_keep_what_the_producer_sent(fields: dict[str, object]) -> None:
    event = _decodes_or_is_refused(json.dumps(fields).encode())
    if event is None:
        return
    for name in ("user_id", "message", "message_id", "campaign_id", "channel", "locale"):
        value = fields.get(name)
        assert isinstance(value, str | None)
        assert getattr(event, name) == (value or "")
    if fields.get("timestamp") is not None:
        # In range, whatever the spelling (RFC 3339 with any offset, ms as number or digits).
        at = event.timestamp.ToDatetime(tzinfo=UTC)
        assert EARLIEST <= at < LATEST
        assert at == parse_timestamp(fields["timestamp"])


@fuzz(500)
@given(raw_events())
@example(E.RawConversationEvent(user_id="u" * 123, message="hi"))  # encoded: b"\n{u..."
@example(E.RawConversationEvent(user_id="u" * 32, message="{"))
def test_protobuf_events_round_trip(event: E.RawConversationEvent) -> None:
    """Every encodable event decodes to itself. The one exception: an encoding made only of
    whitespace bytes (a user_id of spaces and nothing else) is refused as blank."""
    value = encode(event)
    assume(value.strip())
    assert decode_raw_event(value) == event


@fuzz(400)
@given(raw_events(), st.data())
def test_damaged_protobuf_events_decode_or_are_refused(
    event: E.RawConversationEvent, data: st.DataObject
) -> None:
    value = bytearray(encode(event))
    assume(value)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(value) - 1))
        value[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(value)))
    _decodes_or_is_refused(bytes(value[:cut]))


@pytest.mark.parametrize(
    "cls", [E.ValidatedMessage, E.EnrichedMessage, E.DeadLetter, F.FeedbackEvent, F.ErasureRequest]
)
@fuzz(150)
@given(value=st.binary(max_size=200))
def test_other_topics_decode_or_refuse_any_bytes(cls: type, value: bytes) -> None:
    try:
        decode(cls, value)
    except Rejection as refusal:
        assert refusal.code == E.ERROR_CODE_UNDECODABLE


@fuzz(500)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200), json_values.map(json.dumps)))
def test_untrusted_json_loads_or_is_refused(value: bytes | str) -> None:
    try:
        loads_untrusted(value)
    except Rejection as refusal:
        assert refusal.code == E.ERROR_CODE_UNDECODABLE


@fuzz(500)
@given(
    st.one_of(
        st.integers(min_value=-(2**80), max_value=2**80),
        st.floats(),
        st.booleans(),
        st.none(),
        st.text(max_size=60),
        st.datetimes().map(lambda d: d.isoformat()),
        st.builds(
            lambda d, minutes: d.replace(tzinfo=timezone(timedelta(minutes=minutes))).isoformat(),
            st.datetimes(),
            st.integers(-1439, 1439),
        ),
        st.integers(min_value=0, max_value=10**30).map(str),
    )
)
def test_parse_timestamp_gives_an_aware_time_in_range_or_a_value_error(value: object) -> None:
    try:
        at = parse_timestamp(value)
    except ValueError as exc:
        assert str(exc)
        return
    assert at.tzinfo is not None and at.utcoffset() == timedelta(0)
    assert EARLIEST <= at < LATEST
    if isinstance(value, int) and not isinstance(value, bool):
        assert at == EARLIEST + timedelta(milliseconds=value)


@fuzz(500)
@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.integers(-1439, 1439),
)
def test_checked_utc_keeps_the_instant_or_refuses(naive: datetime, minutes: int) -> None:
    at = naive.replace(tzinfo=timezone(timedelta(minutes=minutes)))
    try:
        utc = checked_utc(at)
    except ValueError:
        assert not EARLIEST <= at < LATEST
        return
    assert utc == at and utc.utcoffset() == timedelta(0) and EARLIEST <= utc < LATEST


@fuzz(500)
@given(int64, int32)
def test_event_time_is_in_range_or_refused(seconds: int, nanos: int) -> None:
    timestamp = Timestamp(seconds=seconds, nanos=nanos)
    try:
        at = event_time(timestamp, "timestamp")
    except Rejection as refusal:
        assert (refusal.code, refusal.field) == (E.ERROR_CODE_TIMESTAMP_INVALID, "timestamp")
        return
    assert EARLIEST <= at < LATEST
    assert math.isclose(at.timestamp(), seconds + nanos / 1e9, abs_tol=1e-6)


def test_a_rejection_leaving_a_context_manager_stays_a_rejection() -> None:
    """Found by the fuzz above: Python sets ``__traceback__`` on an exception leaving a
    ``@contextmanager`` block (the stores' ``_op``/``_session``), which a frozen dataclass
    refused with a FrozenInstanceError."""
    from contextlib import contextmanager

    @contextmanager
    def block() -> Iterator[None]:
        yield

    with pytest.raises(Rejection) as info, block():
        raise Rejection(E.ERROR_CODE_SCHEMA_INVALID, "f", "d")
    info.value.add_note("noted")  # also an attribute Python sets
    assert info.value.field == "f"
