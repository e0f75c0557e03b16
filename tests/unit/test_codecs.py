import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from mpp.codecs import (
    Rejection,
    checked_utc,
    decode,
    decode_raw_event,
    encode,
    event_time,
    parse_timestamp,
)
from mpp.v1 import events_pb2 as E


def _json(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def test_json_and_protobuf_decode_to_the_same_event() -> None:
    from_json = decode_raw_event(
        _json(
            user_id="u1",
            message="hi",
            timestamp="2026-01-02T03:04:05.123+01:00",
            campaign_id="c1",
            metadata={"n": 3, "ok": True, "s": "x"},
        )
    )
    assert from_json.timestamp.ToMilliseconds() == int(
        datetime(2026, 1, 2, 2, 4, 5, 123000, tzinfo=UTC).timestamp() * 1000
    )
    assert dict(from_json.metadata) == {"n": "3", "ok": "true", "s": "x"}
    assert from_json.HasField("campaign_id") and not from_json.HasField("message_id")
    assert decode_raw_event(encode(from_json)) == from_json


def test_epoch_milliseconds_as_number_or_digits() -> None:
    a = decode_raw_event(_json(user_id="u", message="m", timestamp=1_767_225_600_123))
    b = decode_raw_event(_json(user_id="u", message="m", timestamp="1767225600123"))
    assert a.timestamp.ToMilliseconds() == b.timestamp.ToMilliseconds() == 1_767_225_600_123


@pytest.mark.parametrize(
    ("value", "code", "field"),
    [
        (b"", E.ERROR_CODE_UNDECODABLE, ""),
        (b"   ", E.ERROR_CODE_UNDECODABLE, ""),
        (b"{not json", E.ERROR_CODE_UNDECODABLE, ""),
        (b"\xff\xfe\x00garbage", E.ERROR_CODE_UNDECODABLE, ""),
        (b'["a list"]', E.ERROR_CODE_UNDECODABLE, ""),
        (_json(userId="u", message="m", timestamp=1), E.ERROR_CODE_SCHEMA_INVALID, "userId"),
        (_json(user_id=5, message="m", timestamp=1), E.ERROR_CODE_SCHEMA_INVALID, "user_id"),
        (
            _json(user_id="u", message="m", timestamp="yesterday"),
            E.ERROR_CODE_TIMESTAMP_INVALID,
            "timestamp",
        ),
        (
            _json(user_id="u", message="m", timestamp="2026-01-01T00:00:00"),
            E.ERROR_CODE_TIMESTAMP_INVALID,
            "timestamp",
        ),
        (
            _json(user_id="u", message="m", timestamp=True),
            E.ERROR_CODE_TIMESTAMP_INVALID,
            "timestamp",
        ),
        (
            _json(user_id="u", message="m", timestamp=1, metadata={"a": {"b": 1}}),
            E.ERROR_CODE_SCHEMA_INVALID,
            "metadata.a",
        ),
    ],
)
def test_rejections_carry_code_and_field(value: bytes, code: int, field: str) -> None:
    with pytest.raises(Rejection) as info:
        decode_raw_event(value)
    assert (info.value.code, info.value.field) == (code, field)
    assert info.value.detail


def test_naive_timestamp_detail_names_the_fix() -> None:
    with pytest.raises(ValueError, match="add Z or an offset"):
        parse_timestamp("2026-01-01T00:00:00")


def test_decode_other_topics_refuses_garbage() -> None:
    dead = E.DeadLetter(original_value=b"x", code=E.ERROR_CODE_MESSAGE_EMPTY)
    assert decode(E.DeadLetter, encode(dead)) == dead
    with pytest.raises(Rejection) as info:
        decode(E.EnrichedMessage, b"\x0a\xff\xff\xff")
    assert info.value.code == E.ERROR_CODE_UNDECODABLE


@pytest.mark.parametrize(
    "timestamp",
    [
        "0001-01-01T00:00:00Z",
        "0001-01-01T00:00:00+01:00",  # UTC is in the year 0: datetime overflows converting it
        "9999-12-31T23:59:59Z",
        "9999-12-31T23:59:59-05:00",  # UTC is in the year 10000
        "1969-12-31T23:59:59.999Z",
        "2200-01-01T00:00:00Z",
        -1,
        -(10**15),
        10**30,
        2**63,
        "9" * 25,
        "1" * 5000,  # past int()'s 4300-digit limit
        "\u0661\u0662\u0663",  # Arabic-Indic digits: str.isdigit() says yes, not epoch ms
    ],
)
def test_out_of_range_timestamps_are_rejected_with_a_reason(timestamp: object) -> None:
    with pytest.raises(Rejection) as info:
        decode_raw_event(_json(user_id="u", message="m", timestamp=timestamp))
    assert (info.value.code, info.value.field) == (E.ERROR_CODE_TIMESTAMP_INVALID, "timestamp")
    assert info.value.detail


@pytest.mark.parametrize(
    ("timestamp", "millis"),
    [
        (0, 0),
        ("1970-01-01T01:00:00+01:00", 0),
        ("2199-12-31T23:59:59.999Z", 7_258_118_399_999),
        (7_258_118_399_999, 7_258_118_399_999),
    ],
)
def test_the_bounds_of_the_range_are_kept(timestamp: object, millis: int) -> None:
    event = decode_raw_event(_json(user_id="u", message="m", timestamp=timestamp))
    assert event.timestamp.ToMilliseconds() == millis


def test_checked_utc_never_overflows_and_returns_utc() -> None:
    plus_one = timezone(timedelta(hours=1))
    assert checked_utc(datetime(2026, 1, 1, 1, tzinfo=plus_one)) == datetime(2026, 1, 1, tzinfo=UTC)
    assert checked_utc(datetime(2026, 1, 1, 1, tzinfo=plus_one)).utcoffset() == timedelta(0)
    for at in (
        datetime(1, 1, 1, tzinfo=plus_one),
        datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))),
        datetime(2026, 1, 1),  # no zone
    ):
        with pytest.raises(ValueError):
            checked_utc(at)


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(-1, 0), (-62_135_596_800, 0), (7_258_118_400, 0), (253_402_300_800, 0), (2**62, 0), (1, -1)],
)
def test_event_time_refuses_protobuf_times_out_of_range(seconds: int, nanos: int) -> None:
    timestamp = Timestamp(seconds=seconds, nanos=nanos)
    with pytest.raises(Rejection) as info:
        event_time(timestamp, "message.timestamp")
    assert (info.value.code, info.value.field) == (
        E.ERROR_CODE_TIMESTAMP_INVALID,
        "message.timestamp",
    )
    assert event_time(Timestamp(seconds=1, nanos=5000), "t") == datetime(
        1970, 1, 1, 0, 0, 1, 5, tzinfo=UTC
    )


@pytest.mark.parametrize(
    "value",
    [
        b'{"user_id": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"metadata": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_001,
        b'{"user_id": "u", "message": "m", "timestamp": 1' + b"0" * 5000 + b"}",
    ],
)
def test_json_too_deep_or_too_long_to_read_is_undecodable(value: bytes) -> None:
    with pytest.raises(Rejection) as info:
        decode_raw_event(value)
    assert info.value.code == E.ERROR_CODE_UNDECODABLE
    assert info.value.detail.startswith("invalid JSON")


def test_deeply_nested_protobuf_groups_are_undecodable() -> None:
    # Field 1 as a start-group tag, 100,000 times over.
    with pytest.raises(Rejection) as info:
        decode_raw_event(b"\x0b" * 100_000)
    assert info.value.code == E.ERROR_CODE_UNDECODABLE
