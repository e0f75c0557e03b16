"""Dead letters: a record a service cannot process, kept with the reason.

Every service routes bad input here instead of crashing or dropping it: the original key,
value and headers, the record's topic/partition/offset, a machine-readable ``ErrorCode``, the
offending field and a detail that names the fix.

Size rule: a dead letter (its key and value) never exceeds ``max_bytes``
(``MPP_KAFKA__DEAD_LETTER_MAX_BYTES``), or the DLQ would refuse it and the service would retry
it forever. A record too large to keep whole keeps a prefix of its value (and of its key, and
the headers that fit), with the whole's size and SHA-256 in ``DeadLetter.truncated``; the
reason and the source position are always kept whole (the detail is cut at
``MAX_DETAIL_CHARS``).
"""

from __future__ import annotations

import hashlib

from confluent_kafka import Message

from mpp.codecs import Rejection, encode
from mpp.config import KafkaSettings
from mpp.errors import RecordRefused
from mpp.kafka import Sink, position
from mpp.logs import get_logger
from mpp.observability import RECORDS_DEAD_LETTERED
from mpp.tracing import record_context
from mpp.v1 import events_pb2

log = get_logger(__name__)

DEFAULT_MAX_BYTES = KafkaSettings().dead_letter_max_bytes
# The reason's own text is bounded, so that it always fits beside a prefix of the original.
MAX_FIELD_CHARS = 256
MAX_DETAIL_CHARS = 2000
# What a truncated dead letter keeps of the original key, and of the headers (in bytes).
KEY_PREFIX_BYTES = 1024
HEADER_BUDGET_BYTES = 16_384
# Room for the value field's tag and length (at most 1 + 5 bytes), with a margin.
_VALUE_FRAMING = 16


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def rejection_of(exc: Exception) -> Rejection:
    """The reason a record that made a handler raise ``exc`` is dead-lettered with."""
    if isinstance(exc, Rejection):
        return exc
    kind = type(exc).__name__
    if isinstance(exc, RecordRefused):
        detail = f"{kind}: what the service made of this record is refused by Kafka ({exc})"
    else:
        detail = f"{kind}: {exc}" if str(exc) else kind
    return Rejection(events_pb2.ERROR_CODE_PROCESSING_FAILED, "", _cut(detail, MAX_DETAIL_CHARS))


def record_size(dead: events_pb2.DeadLetter) -> int:
    """Bytes of the DLQ record that carries ``dead``: its value, and its key (the original's
    key, or its prefix)."""
    return dead.ByteSize() + len(dead.original_key)


def dead_letter(
    msg: Message, rejection: Rejection, service: str, max_bytes: int = DEFAULT_MAX_BYTES
) -> events_pb2.DeadLetter:
    """The dead letter of ``msg``, within ``max_bytes`` (see the module's size rule)."""
    topic, partition, offset = position(msg)
    key, value = msg.key() or b"", msg.value() or b""
    dead = events_pb2.DeadLetter(
        original_key=key,
        original_value=value,
        code=rejection.code,  # type: ignore[arg-type]
        field=_cut(rejection.field, MAX_FIELD_CHARS),
        detail=_cut(rejection.detail, MAX_DETAIL_CHARS),
        service=service,
    )
    headers = []
    for header in msg.headers() or []:
        name, raw = header[0], header[1]
        text = raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else raw
        headers.append((name, text or ""))
        dead.original_headers[name] = text or ""
    dead.source.topic, dead.source.partition, dead.source.offset = topic, partition, offset
    dead.failed_at.GetCurrentTime()
    if record_size(dead) > max_bytes:
        _truncate(dead, key, value, headers, max_bytes)
    return dead


def _truncate(
    dead: events_pb2.DeadLetter,
    key: bytes,
    value: bytes,
    headers: list[tuple[str, str]],
    max_bytes: int,
) -> None:
    """Cut the original down to fit ``max_bytes``, recording what the whole was."""
    truncated = dead.truncated
    truncated.value_size = len(value)
    truncated.value_sha256 = hashlib.sha256(value).digest()
    truncated.key_size = len(key)
    truncated.key_sha256 = hashlib.sha256(key).digest()
    dead.original_key = key[:KEY_PREFIX_BYTES]
    dead.original_headers.clear()
    budget = min(HEADER_BUDGET_BYTES, max_bytes // 4)
    for name, text in headers:
        size = len(name.encode()) + len(text.encode()) + 8
        if size <= budget and name not in dead.original_headers:
            dead.original_headers[name] = text
            budget -= size
        else:
            truncated.headers_dropped += 1
    dead.original_value = b""
    room = max_bytes - record_size(dead) - _VALUE_FRAMING
    dead.original_value = value[: max(0, room)]


class DeadLetters:
    """A service's way to the DLQ: ``send`` a rejected record, or, as the batch loop's
    safety net (``mpp.kafka.BatchLoop(dead_letter=...)``), ``send_failure`` a record that
    made the handler raise."""

    def __init__(
        self, producer: Sink, topic: str, service: str, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.service = service
        self.max_bytes = max_bytes

    @classmethod
    def of(cls, settings: KafkaSettings, producer: Sink, service: str) -> DeadLetters:
        return cls(producer, settings.topics.dlq, service, settings.dead_letter_max_bytes)

    def send(self, msg: Message, rejection: Rejection) -> None:
        send_to_dlq(self.producer, self.topic, msg, rejection, self.service, self.max_bytes)

    def send_failure(self, msg: Message, exc: Exception) -> None:
        self.send(msg, rejection_of(exc))


def send_to_dlq(
    producer: Sink,
    dlq_topic: str,
    msg: Message,
    rejection: Rejection,
    service: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> None:
    """Produce the dead letter (keyed like the original, or by its prefix), count it, log it."""
    code = events_pb2.ErrorCode.Name(rejection.code)  # type: ignore[arg-type]
    RECORDS_DEAD_LETTERED.labels(service, code).inc()
    dead = dead_letter(msg, rejection, service, max_bytes)
    log.warning(
        "record_dead_lettered",
        code=code,
        field=dead.field,
        topic=dead.source.topic,
        partition=dead.source.partition,
        offset=dead.source.offset,
        truncated=dead.HasField("truncated"),
    )
    # In the trace of the record's processing span, or else of the record itself.
    with record_context(msg):
        producer.produce(dlq_topic, encode(dead), key=dead.original_key or None)
