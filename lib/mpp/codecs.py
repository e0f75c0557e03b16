"""Bytes to messages and back, for every topic.

Raw events come as protobuf (``mpp.v1.RawConversationEvent``) or as a JSON object with the
same field names; a JSON value starts with ``{`` (which no protobuf encoding of that message
can), so the two are told apart without a header. In JSON, ``timestamp`` is an RFC 3339 string
with a time zone or epoch milliseconds (a number or a string of digits). Unknown JSON fields
are refused rather than ignored, so that a misspelt field (``userId``) is seen, not dropped.

Event times are taken from ``EARLIEST`` (the Unix epoch) up to ``LATEST`` (2200), on every path
where one enters (raw events, feedback, erasure requests): a time outside is a unit or clock
mistake, and refusing it early keeps every later conversion (time zones, Python's datetime,
the warehouse) far from its limits. ``parse_timestamp``, ``checked_utc`` and ``event_time``
hold that rule.

Every other topic carries protobuf only; ``encode`` writes deterministic bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp

from mpp.v1 import events_pb2

M = TypeVar("M", bound=Message)

_JSON_FIELDS = {
    "user_id",
    "message",
    "timestamp",
    "message_id",
    "campaign_id",
    "channel",
    "locale",
    "metadata",
}
_OPTIONAL_STRINGS = ("message_id", "campaign_id", "channel", "locale")

EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)  # excluded
_EARLIEST_S = 0
_LATEST_S = int((LATEST - EARLIEST).total_seconds())
_LATEST_MS = _LATEST_S * 1000
_RANGE = f"event times go from {EARLIEST:%Y-%m-%d} to before {LATEST:%Y-%m-%d} (UTC)"


@dataclass(eq=False)
class Rejection(Exception):
    """Why an input is refused: a machine-readable code, the field, and a fix-naming detail.

    Not a frozen dataclass, though nothing should change it: a frozen one refuses every
    attribute, including those Python sets on an exception in flight (``__traceback__`` when it
    leaves a ``@contextmanager`` block, ``__notes__``), which turned a Rejection raised inside a
    store's context manager into a FrozenInstanceError (found by tests/fuzz)."""

    code: int  # an mpp.v1.ErrorCode value
    field: str
    detail: str

    def __str__(self) -> str:
        name = events_pb2.ErrorCode.Name(self.code)  # type: ignore[arg-type]
        return f"{name} ({self.field or 'record'}): {self.detail}"


def encode(message: Message) -> bytes:
    return message.SerializeToString(deterministic=True)


def decode(cls: type[M], value: bytes | None) -> M:
    """Parse a protobuf value; raises Rejection(UNDECODABLE) on bytes that are not one."""
    if not value:
        raise Rejection(events_pb2.ERROR_CODE_UNDECODABLE, "", "empty record value")
    try:
        return cls.FromString(value)
    except DecodeError as exc:
        raise Rejection(
            events_pb2.ERROR_CODE_UNDECODABLE,
            "",
            f"not a {cls.DESCRIPTOR.full_name} protobuf message ({exc})",
        ) from exc


def checked_utc(at: datetime) -> datetime:
    """``at`` (timezone-aware) in UTC; raises ValueError when it has no zone or lies outside
    [EARLIEST, LATEST). Never raises OverflowError, even at the year 1 or 9999 with an offset."""
    if at.utcoffset() is None:
        raise ValueError(f"{at.isoformat()} has no time zone; add Z or an offset like +01:00")
    # Subtracting two aware datetimes moves neither into UTC, so nothing can overflow here.
    since = at - EARLIEST
    if not timedelta(0) <= since < LATEST - EARLIEST:
        raise ValueError(f"{at.isoformat()} is out of range: {_RANGE}")
    return EARLIEST + since


def event_time(timestamp: Timestamp, field: str) -> datetime:
    """A protobuf Timestamp as an aware UTC datetime; raises Rejection(TIMESTAMP_INVALID) naming
    ``field`` when it is not a valid Timestamp or lies outside [EARLIEST, LATEST)."""
    seconds, nanos = timestamp.seconds, timestamp.nanos
    if not 0 <= nanos < 1_000_000_000:
        raise Rejection(
            events_pb2.ERROR_CODE_TIMESTAMP_INVALID,
            field,
            f"{field} has nanos={nanos}; a Timestamp's nanos are 0 to 999999999",
        )
    if not _EARLIEST_S <= seconds < _LATEST_S:
        hint = "; is it in milliseconds instead of seconds?" if seconds >= _LATEST_S else ""
        raise Rejection(
            events_pb2.ERROR_CODE_TIMESTAMP_INVALID,
            field,
            f"{field} ({seconds} s since 1970) is out of range: {_RANGE}{hint}",
        )
    return timestamp.ToDatetime(tzinfo=UTC)


def parse_timestamp(value: Any) -> datetime:
    """RFC 3339 with a zone, or epoch milliseconds; always returns an aware UTC datetime in
    [EARLIEST, LATEST). Raises ValueError (never OverflowError) on anything else."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a timestamp")
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        digits = value.strip()
        # More digits than any millisecond count in range: refused before int() reads them
        # (int() itself gives up past 4300 digits, with a less helpful message).
        if len(digits) > len(str(_LATEST_MS)):
            raise ValueError(f"epoch milliseconds {digits[:24]}... are out of range: {_RANGE}")
        value = int(digits)
    if isinstance(value, int):
        if not 0 <= value < _LATEST_MS:
            raise ValueError(
                f"epoch milliseconds {value} are out of range: {_RANGE} "
                f"(0 to {_LATEST_MS - 1}); are they in micro- or nanoseconds?"
            )
        return EARLIEST + timedelta(milliseconds=value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError as exc:
            raise ValueError(
                f"{value[:80]!r} is not RFC 3339; use e.g. 2026-11-28T16:00:00Z or epoch ms"
            ) from exc
        if parsed.tzinfo is None:
            raise ValueError(f"{value[:80]!r} has no time zone; add Z or an offset like +01:00")
        return checked_utc(parsed)
    raise ValueError(
        f"expected an RFC 3339 string or epoch milliseconds, got {type(value).__name__}"
    )


def _schema_error(field: str, detail: str) -> Rejection:
    return Rejection(events_pb2.ERROR_CODE_SCHEMA_INVALID, field, detail)


def loads_untrusted(value: bytes | str) -> Any:
    """``json.loads`` for bytes from outside; raises Rejection(UNDECODABLE) on whatever it
    cannot read: bad syntax or encoding, an integer of more than 4300 digits (a ValueError),
    or nesting deeper than the recursion limit (a RecursionError, e.g. 100,000 ``[``)."""
    try:
        return json.loads(value)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, too many digits
        raise Rejection(
            events_pb2.ERROR_CODE_UNDECODABLE, "", f"invalid JSON: {str(exc)[:200]}"
        ) from exc
    except RecursionError as exc:
        raise Rejection(
            events_pb2.ERROR_CODE_UNDECODABLE,
            "",
            "invalid JSON: arrays or objects nested too deeply to read",
        ) from exc


def _from_json(value: bytes) -> events_pb2.RawConversationEvent:
    data = loads_untrusted(value)
    if not isinstance(data, dict):
        raise _schema_error("", f"expected a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - _JSON_FIELDS)
    if unknown:
        raise _schema_error(
            unknown[0],
            f"unknown field {unknown[0]!r}; known fields: {', '.join(sorted(_JSON_FIELDS))}",
        )
    event = events_pb2.RawConversationEvent()
    for name in ("user_id", "message", *_OPTIONAL_STRINGS):
        raw = data.get(name)
        if raw is None:
            continue
        if not isinstance(raw, str):
            raise _schema_error(name, f"{name} must be a string, got {type(raw).__name__}")
        setattr(event, name, raw)
    if data.get("timestamp") is not None:
        try:
            event.timestamp.FromDatetime(parse_timestamp(data["timestamp"]))
        except ValueError as exc:
            raise Rejection(events_pb2.ERROR_CODE_TIMESTAMP_INVALID, "timestamp", str(exc)) from exc
    metadata = data.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise _schema_error("metadata", "metadata must be an object of strings")
        for key, item in metadata.items():
            if isinstance(item, dict | list):
                raise _schema_error(
                    f"metadata.{key}", "metadata values must be strings, numbers or booleans"
                )
            event.metadata[str(key)] = item if isinstance(item, str) else json.dumps(item)
    return event


def decode_raw_event(value: bytes | None) -> events_pb2.RawConversationEvent:
    """A raw event from JSON or protobuf bytes; raises Rejection when it is neither.

    JSON may have whitespace before its ``{``; so may a protobuf encoding seem to: one whose
    user_id is 123 bytes long starts with b"\\n{" (field 1's tag is a newline, its length a
    brace). So bytes that start with whitespace and then ``{`` are read as JSON first and, when
    that fails, as protobuf; the JSON reason is kept when neither reads (found by tests/fuzz).
    """
    if not value or not value.strip():
        raise Rejection(events_pb2.ERROR_CODE_UNDECODABLE, "", "empty record value")
    if value[:1] == b"{":
        return _from_json(value)
    if value.lstrip()[:1] == b"{":
        try:
            return _from_json(value)
        except Rejection as not_json:
            try:
                return events_pb2.RawConversationEvent.FromString(value)
            except DecodeError:
                raise not_json from None
    return decode(events_pb2.RawConversationEvent, value)
