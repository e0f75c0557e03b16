"""vector-writer: enriched messages in, Milvus rows out; erasure requests remove a user's rows.

Loop (mpp.kafka.BatchLoop): consume ``conversations.enriched`` (``EnrichedMessage``) and
``users.erasure`` (``ErasureRequest``); a record that is not one of those, or lacks what a
row needs, goes to ``conversations.dlq`` as a ``DeadLetter``. Within a batch, messages are
deduplicated by message_id (the last one wins) and a user's erasure drops that user's
messages read before it in the batch. Then erasures are deleted and messages upserted by
message_id, and only then the batch's offsets are committed: replays rewrite the same rows.

Milvus down or slow: ``RetryableError``, the loop retries the batch. The collection holding
another dimension than the model's: the service stops with an error naming the fix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from confluent_kafka import Message
from google.protobuf.message import Message as Proto

from mpp.codecs import Rejection, decode
from mpp.config import Settings
from mpp.deadletters import send_to_dlq
from mpp.kafka import Handler, Sink, TrackedProducer
from mpp.logs import get_logger
from mpp.service import Worker
from mpp.v1 import events_pb2, feedback_pb2
from mpp.vectors import MAX_ID_CHARS, MessageVector, VectorStore

SERVICE = "vector-writer"
log = get_logger(SERVICE)
P = TypeVar("P", bound=Proto)


@dataclass
class Plan:
    """What one batch asks of the store, in the order that keeps the batch's meaning."""

    # Users to erase (request ids kept for the logs). Erasures run before the upserts.
    erasures: dict[str, str] = field(default_factory=dict)
    # Messages by message_id, the last record winning.
    messages: dict[str, events_pb2.EnrichedMessage] = field(default_factory=dict)
    rejected: list[tuple[Message, Rejection]] = field(default_factory=list)

    def add(self, enriched: events_pb2.EnrichedMessage) -> None:
        # Re-inserting moves a replayed id to the end: the last record wins.
        self.messages.pop(enriched.message.message_id, None)
        self.messages[enriched.message.message_id] = enriched

    def erase(self, request: feedback_pb2.ErasureRequest) -> None:
        self.erasures[request.user_id] = request.request_id
        # The user's messages read before the request go with the user; later ones stay.
        for message_id in [
            k for k, v in self.messages.items() if v.message.user_id == request.user_id
        ]:
            del self.messages[message_id]


def check_enriched(enriched: events_pb2.EnrichedMessage) -> Rejection | None:
    """Why the message cannot become a Milvus row, or None."""
    message = enriched.message
    for name, value in (("message_id", message.message_id), ("user_id", message.user_id)):
        # As in the embedder: a missing id is a schema problem of the record.
        if not value:
            return Rejection(
                events_pb2.ERROR_CODE_SCHEMA_INVALID,
                f"message.{name}",
                f"message.{name} is empty; ingest always sets it",
            )
        if len(value) > MAX_ID_CHARS:
            return Rejection(
                events_pb2.ERROR_CODE_SCHEMA_INVALID,
                f"message.{name}",
                f"message.{name} has {len(value)} characters; at most {MAX_ID_CHARS}",
            )
    if not enriched.embedding:
        return Rejection(
            events_pb2.ERROR_CODE_FIELD_INVALID,
            "embedding",
            "embedding is empty; the embedder must send the vector",
        )
    if enriched.dimension and len(enriched.embedding) != enriched.dimension:
        return Rejection(
            events_pb2.ERROR_CODE_FIELD_INVALID,
            "embedding",
            f"embedding has {len(enriched.embedding)} values but dimension says "
            f"{enriched.dimension}",
        )
    return None


def decode_known(cls: type[P], value: bytes | None) -> P:
    """``mpp.codecs.decode``, also refusing bytes that parse as nothing but unknown fields."""
    message = decode(cls, value)
    if not message.ListFields():
        raise Rejection(
            events_pb2.ERROR_CODE_UNDECODABLE,
            "",
            f"not a {cls.DESCRIPTOR.full_name} protobuf message (no known field is set)",
        )
    return message


Check = Callable[[events_pb2.EnrichedMessage], Rejection | None]


def plan_batch(
    batch: list[Message], enriched_topic: str, erasure_topic: str, check: Check = check_enriched
) -> Plan:
    """Decode and sort a batch; nothing is written here."""
    plan = Plan()
    for msg in batch:
        try:
            if msg.topic() == erasure_topic:
                request = decode_known(feedback_pb2.ErasureRequest, msg.value())
                if not request.user_id:
                    raise Rejection(
                        events_pb2.ERROR_CODE_USER_ID_MISSING,
                        "user_id",
                        "erasure request without user_id; set the user to forget",
                    )
                plan.erase(request)
            elif msg.topic() == enriched_topic:
                enriched = decode_known(events_pb2.EnrichedMessage, msg.value())
                rejection = check(enriched)
                if rejection is not None:
                    raise rejection
                plan.add(enriched)
            else:
                raise Rejection(
                    events_pb2.ERROR_CODE_PROCESSING_FAILED,
                    "",
                    f"record from topic {msg.topic()!r}, which this service does not read",
                )
        except Rejection as rejection:
            plan.rejected.append((msg, rejection))
    return plan


def build_handler(settings: Settings, store: VectorStore, producer: Sink) -> Handler:
    """The batch handler: plan, dead-letter, erase, upsert. Raises RetryableError to retry."""
    topics = settings.kafka.topics

    def handle(batch: list[Message]) -> None:
        plan = plan_batch(batch, topics.enriched, topics.erasure)
        for msg, rejection in plan.rejected:
            send_to_dlq(producer, topics.dlq, msg, rejection, SERVICE)
        for user_id, request_id in plan.erasures.items():
            removed = store.delete_user(user_id)
            # The user id is not logged: the request id traces the erasure.
            log.info("user_erased", request_id=request_id, vectors_removed=removed)
        if plan.messages:
            rows = [MessageVector.from_enriched(e) for e in plan.messages.values()]
            store.upsert_messages(rows)
            log.debug("vectors_upserted", rows=len(rows))

    return handle


def worker(settings: Settings) -> Worker:
    store = VectorStore(settings)
    producer = TrackedProducer(settings.kafka, service=SERVICE)
    return Worker(
        name=SERVICE,
        topics=[settings.kafka.topics.enriched, settings.kafka.topics.erasure],
        handler=build_handler(settings, store, producer),
        batch_size=settings.vector_writer.batch_size,
        max_wait_s=settings.vector_writer.max_wait_s,
        producer=producer,
        readiness=store.ping,
    )
