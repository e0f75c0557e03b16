"""Dead letters: a record a service cannot process, kept whole with the reason.

Every service routes bad input here instead of crashing or dropping it: the original key,
value and headers, the record's topic/partition/offset, a machine-readable ``ErrorCode``, the
offending field and a detail that names the fix.
"""

from __future__ import annotations

from confluent_kafka import Message

from mpp.codecs import Rejection, encode
from mpp.kafka import Sink, position
from mpp.logs import get_logger
from mpp.observability import RECORDS_FAILED
from mpp.v1 import events_pb2

log = get_logger(__name__)


def dead_letter(msg: Message, rejection: Rejection, service: str) -> events_pb2.DeadLetter:
    topic, partition, offset = position(msg)
    dead = events_pb2.DeadLetter(
        original_key=msg.key() or b"",
        original_value=msg.value() or b"",
        code=rejection.code,  # type: ignore[arg-type]
        field=rejection.field,
        detail=rejection.detail,
        service=service,
    )
    for header in msg.headers() or []:
        name, value = header[0], header[1]
        text = value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value
        dead.original_headers[name] = text or ""
    dead.source.topic, dead.source.partition, dead.source.offset = topic, partition, offset
    dead.failed_at.GetCurrentTime()
    return dead


def send_to_dlq(
    producer: Sink, dlq_topic: str, msg: Message, rejection: Rejection, service: str
) -> None:
    """Produce the dead letter (keyed like the original), count it and log it."""
    code = events_pb2.ErrorCode.Name(rejection.code)  # type: ignore[arg-type]
    RECORDS_FAILED.labels(service, code).inc()
    dead = dead_letter(msg, rejection, service)
    log.warning(
        "record_dead_lettered",
        code=code,
        field=rejection.field,
        topic=dead.source.topic,
        partition=dead.source.partition,
        offset=dead.source.offset,
    )
    producer.produce(dlq_topic, encode(dead), key=msg.key())
