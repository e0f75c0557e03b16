"""ingest: raw conversation events in, validated messages or dead letters out.

Loop (mpp.kafka.BatchLoop): consume ``conversations.raw`` (JSON or protobuf), decode,
validate, normalize, redact PII, derive the stable message_id, produce a ``ValidatedMessage``
keyed by user_id to ``conversations.validated``; anything invalid goes to
``conversations.dlq`` as a ``DeadLetter`` with the original bytes, its position and the
reason. The batch's offsets are committed after both topics acknowledged it.

Duplicates inside one batch (same message_id) are produced once; across batches the writers'
upserts and MERGEs absorb them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from confluent_kafka import Message

from mpp.codecs import Rejection, decode_raw_event, encode
from mpp.config import Settings
from mpp.deadletters import DeadLetters
from mpp.kafka import Handler, Sink, TrackedProducer, position
from mpp.logs import get_logger
from mpp.service import Worker
from mpp.tracing import get_tracer, record_span
from mpp.v1 import events_pb2
from mpp.validation import Rules, validate_event

SERVICE = "ingest"
log = get_logger(SERVICE)


def build_handler(
    settings: Settings,
    producer: Sink,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Handler:
    rules = Rules.from_settings(settings.ingest)
    topics = settings.kafka.topics
    dead_letters = DeadLetters.of(settings.kafka, producer, SERVICE)
    tracer = get_tracer(__name__)

    def check(msg: Message, now: datetime) -> events_pb2.ValidatedMessage | Rejection:
        try:
            return validate_event(decode_raw_event(msg.value()), rules, now)
        except Rejection as rejection:
            return rejection
        except Exception as exc:  # a bug must not stop the stream nor lose the record
            log.exception("processing_failed", error=str(exc))
            return Rejection(events_pb2.ERROR_CODE_PROCESSING_FAILED, "", repr(exc))

    def handle(batch: list[Message]) -> None:
        now = clock()
        seen: set[str] = set()
        for msg in batch:
            # The record's span (a child of its producer's): its output and dead letter carry it.
            with record_span(tracer, msg) as span:
                validated = check(msg, now)
                if isinstance(validated, Rejection):
                    dead_letters.send(msg, validated)
                    continue
                span.set_attribute("mpp.message_id", validated.message_id)
                if validated.message_id in seen:
                    continue
                seen.add(validated.message_id)
                topic, partition, offset = position(msg)
                validated.source.topic, validated.source.partition = topic, partition
                validated.source.offset = offset
                validated.ingested_at.FromDatetime(now)
                producer.produce(topics.validated, encode(validated), key=validated.user_id)

    return handle


def worker(settings: Settings) -> Worker:
    producer = TrackedProducer(settings.kafka, service=SERVICE)
    return Worker(
        name=SERVICE,
        topics=[settings.kafka.topics.raw],
        handler=build_handler(settings, producer),
        batch_size=settings.ingest.batch_size,
        max_wait_s=settings.ingest.max_wait_s,
        producer=producer,
        dead_letters=DeadLetters.of(settings.kafka, producer, SERVICE),
    )
