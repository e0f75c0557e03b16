"""Bytes to messages and back, for every topic.

Raw events come as protobuf (``mpp.v1.RawConversationEvent``) or as a JSON object with the
same field names; a JSON value starts with ``{`` (which no protobuf encoding of that message
can), so the two are told apart without a header. In JSON, ``timestamp`` is an RFC 3339 string
with a time zone or epoch milliseconds (a number or a string of digits). Unknown JSON fields
are refused rather than ignored, so that a misspelt field (``userId``) is seen, not dropped.

Every other topic carries protobuf only; ``encode`` writes deterministic bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from google.protobuf.message import DecodeError, Message

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


@dataclass(frozen=True)
class Rejection(Exception):
    """Why an input is refused: a machine-readable code, the field, and a fix-naming detail."""

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


def parse_timestamp(value: Any) -> datetime:
    """RFC 3339 with a zone, or epoch milliseconds; always returns an aware UTC datetime."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a timestamp")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int):
        try:
            return datetime.fromtimestamp(value / 1000, tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise ValueError(f"epoch milliseconds {value} are out of range") from exc
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError as exc:
            raise ValueError(
                f"{value!r} is not RFC 3339; use e.g. 2026-11-28T16:00:00Z or epoch ms"
            ) from exc
        if parsed.tzinfo is None:
            raise ValueError(f"{value!r} has no time zone; add Z or an offset like +01:00")
        return parsed.astimezone(UTC)
    raise ValueError(
        f"expected an RFC 3339 string or epoch milliseconds, got {type(value).__name__}"
    )


def _schema_error(field: str, detail: str) -> Rejection:
    return Rejection(events_pb2.ERROR_CODE_SCHEMA_INVALID, field, detail)


def _from_json(value: bytes) -> events_pb2.RawConversationEvent:
    try:
        data = json.loads(value)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Rejection(events_pb2.ERROR_CODE_UNDECODABLE, "", f"invalid JSON: {exc}") from exc
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
    """A raw event from JSON or protobuf bytes; raises Rejection when it is neither."""
    if not value or not value.strip():
        raise Rejection(events_pb2.ERROR_CODE_UNDECODABLE, "", "empty record value")
    if value.lstrip()[:1] == b"{":
        return _from_json(value)
    return decode(events_pb2.RawConversationEvent, value)
