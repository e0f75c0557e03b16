"""The ingest handler on hostile raw events: each becomes a dead letter with its own reason,
never a processing failure. No broker: the handler produces into a list."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from confluent_kafka import Message
from mpp_ingest.service import build_handler

from mpp.config import Settings
from mpp.v1 import events_pb2 as E

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


class ListSink:
    def __init__(self) -> None:
        self.records: list[tuple[str, bytes]] = []

    def produce(self, topic: str, value: bytes, key: bytes | str | None = None) -> None:
        self.records.append((topic, value))


def _event(**fields: object) -> bytes:
    return json.dumps({"user_id": "u1", "message": "hi", **fields}).encode()


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (_event(timestamp="9999-12-31T23:59:59-05:00"), E.ERROR_CODE_TIMESTAMP_INVALID),
        (_event(timestamp="0001-01-01T00:00:00+01:00"), E.ERROR_CODE_TIMESTAMP_INVALID),
        (_event(timestamp=-1), E.ERROR_CODE_TIMESTAMP_INVALID),
        (_event(timestamp=10**30), E.ERROR_CODE_TIMESTAMP_INVALID),
        (b'{"message": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", E.ERROR_CODE_UNDECODABLE),
        (_event(message_id="m1\n", timestamp=1_780_000_000_000), E.ERROR_CODE_FIELD_INVALID),
    ],
)
def test_hostile_events_are_dead_lettered_with_their_reason(value: bytes, code: int) -> None:
    settings = Settings()
    sink = ListSink()
    handle = build_handler(settings, sink, clock=lambda: NOW)
    good = _event(timestamp=1_780_000_000_000)
    handle(
        [Message(topic="raw", partition=0, offset=i, value=v) for i, v in enumerate((value, good))]
    )
    topics = settings.kafka.topics
    assert [t for t, _ in sink.records] == [topics.dlq, topics.validated]
    dead = E.DeadLetter.FromString(sink.records[0][1])
    assert dead.original_value == value
    assert dead.code == code
