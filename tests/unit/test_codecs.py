import json
from datetime import UTC, datetime

import pytest

from mpp.codecs import Rejection, decode, decode_raw_event, encode, parse_timestamp
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
