"""What the store writers (vector-writer, graph-writer) share: reading a batch into a plan.

A batch mixes ``conversations.enriched`` (``EnrichedMessage``) and ``users.erasure``
(``ErasureRequest``) records. ``plan_batch`` decodes and sorts it without writing anything:
messages deduplicated by message_id (the last record wins), a user's erasure dropping that
user's messages read before it in the batch, and the records that cannot be used, each with its
``Rejection``. A writer may also ``screen`` the batch's messages against its store (the
vector-writer: the collection's dimension). ``WriterHandler`` then dead-letters the rejects,
erases, writes; the loop commits only after that. It is a ``mpp.kafka.StagedHandler``: the
decoding, the dead letters, the erasure ledger and the store's rows (``prepare``) of the next
batch overlap the store's writes (``apply``) of this one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, Protocol, TypeVar

from confluent_kafka import Message
from google.protobuf.message import Message as Proto
from prometheus_client import Counter

from mpp.codecs import Rejection, decode, event_time
from mpp.config import Settings, WriterSettings
from mpp.deadletters import DeadLetters
from mpp.erasure import ErasureLedger
from mpp.kafka import Sink, TrackedProducer
from mpp.logs import get_logger
from mpp.ownership import conflict
from mpp.service import Worker
from mpp.stores.base import MAX_ID_CHARS
from mpp.tracing import (
    Link,
    Span,
    get_tracer,
    links_to,
    start_record_span,
    store_span,
    use_span,
)
from mpp.tracing import enabled as tracing_enabled
from mpp.v1 import events_pb2, feedback_pb2
from mpp.validation import stored_ids_rejection

ERASED_DROPPED = Counter(
    "mpp_erased_messages_dropped_total",
    "Messages not written because their user was erased after sending them",
    ["service"],
)
P = TypeVar("P", bound=Proto)
# A batch as the store takes it (MessageVector rows, a graph MERGE's parameters).
R = TypeVar("R")
Check = Callable[[events_pb2.EnrichedMessage], Rejection | None]
# The messages a store cannot take, with why (reads the store at most; writes nothing).
Screen = Callable[
    [Sequence[events_pb2.EnrichedMessage]], list[tuple[events_pb2.EnrichedMessage, Rejection]]
]


@dataclass
class Plan:
    """What one batch asks of the store, in the order that keeps the batch's meaning."""

    # Users to erase (request ids kept for the logs). Erasures run before the writes.
    erasures: dict[str, str] = field(default_factory=dict)
    # When each erasure was requested (its messages up to then are to be dropped).
    erased_at: dict[str, datetime] = field(default_factory=dict)
    # Messages by message_id, the last record winning.
    messages: dict[str, events_pb2.EnrichedMessage] = field(default_factory=dict)
    rejected: list[tuple[Message, Rejection]] = field(default_factory=list)
    # The record each kept message came from, to dead-letter one its store refuses.
    origins: dict[str, Message] = field(default_factory=dict)

    def add(self, enriched: events_pb2.EnrichedMessage, origin: Message | None = None) -> None:
        # Re-inserting moves a replayed id to the end: the last record wins.
        message_id = enriched.message.message_id
        earlier = self.messages.get(message_id)
        if earlier is not None and earlier.message.user_id != enriched.message.user_id:
            # Another user's message holds the id: the first keeps it (``mpp.ownership``).
            if origin is not None:
                self.rejected.append((origin, conflict(message_id)))
            return
        self.messages.pop(message_id, None)
        self.messages[message_id] = enriched
        if origin is not None:
            self.origins[message_id] = origin

    def reject(self, message_id: str, rejection: Rejection) -> None:
        """Take a planned message out, to be dead-lettered with ``rejection``."""
        del self.messages[message_id]
        self.rejected.append((self.origins[message_id], rejection))

    def erase(self, request: feedback_pb2.ErasureRequest) -> None:
        """Raises Rejection, changing nothing, when the request's time is out of range."""
        requested = (
            event_time(request.requested_at, "requested_at")
            if request.HasField("requested_at")
            else datetime.now(UTC)
        )
        self.erasures[request.user_id] = request.request_id
        self.erased_at[request.user_id] = max(
            requested, self.erased_at.get(request.user_id, requested)
        )
        # The user's messages read before the request go with the user; later ones stay.
        for message_id in [
            k for k, v in self.messages.items() if v.message.user_id == request.user_id
        ]:
            del self.messages[message_id]


def check_ids(enriched: events_pb2.EnrichedMessage) -> Rejection | None:
    """Why the message's ids cannot key a row or a node, or None."""
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
    return stored_ids_rejection(message.user_id, message.message_id, "message.")


def decode_known(cls: type[P], value: bytes | None, usual: str = "") -> P:
    """``mpp.codecs.decode``, also refusing bytes that parse as nothing but unknown fields.
    ``usual`` names a message field that a valid record has: when it is set, the (costlier)
    look at every field is skipped."""
    message = decode(cls, value)
    if not (usual and message.HasField(usual)) and not message.ListFields():
        raise Rejection(
            events_pb2.ERROR_CODE_UNDECODABLE,
            "",
            f"not a {cls.DESCRIPTOR.full_name} protobuf message (no known field is set)",
        )
    return message


def unread_topic(topic: str | None) -> Rejection:
    """What a record from a topic the service does not subscribe to gets: a DLQ entry (it can
    only come from a misconfigured subscription, and must not stop the batch)."""
    return Rejection(
        events_pb2.ERROR_CODE_PROCESSING_FAILED,
        "",
        f"record from topic {topic!r}, which this service does not read",
    )


def plan_batch(
    batch: list[Message], enriched_topic: str, erasure_topic: str, check: Check = check_ids
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
                enriched = decode_known(events_pb2.EnrichedMessage, msg.value(), usual="message")
                # Checked here so that comparing it with an erasure's time cannot raise later.
                event_time(enriched.message.timestamp, "message.timestamp")
                rejection = check(enriched)
                if rejection is not None:
                    raise rejection
                plan.add(enriched, msg)
            else:
                raise unread_topic(msg.topic())
        except Rejection as rejection:
            plan.rejected.append((msg, rejection))
    return plan


@dataclass
class Prepared(Generic[R]):
    """A batch ready for its store: who to erase, then the rows to write."""

    erasures: dict[str, str]
    rows: R | None
    # Messages in ``rows``, and links to the spans of their records (for the write's span).
    count: int = 0
    links: list[Link] = field(default_factory=list)


@dataclass
class StoreWriter(Generic[R]):
    """How a writer turns messages into its store's rows, and writes them."""

    # The store's rows for the messages: CPU only, no I/O (it runs while the previous
    # batch is being written).
    rows: Callable[[Sequence[events_pb2.EnrichedMessage]], R]
    write: Callable[[R], object]
    # Messages the store cannot take (``Screen``); None: every checked message can be written.
    screen: Screen | None = None
    # The store and the write, as the write's trace span names them (``mpp.store``).
    store: str = "store"
    operation: str = "write"


class WriterHandler(Generic[R]):
    """The batch handler: plan, dead-letter, record erasures and drop the messages of erased
    users sent before their erasure (``mpp.erasure``), build the rows (``prepare``); erase,
    write (``apply``). Store failures raise ``RetryableError`` from the ledger, ``erase`` or
    ``write``, and the loop retries that step."""

    def __init__(
        self,
        settings: Settings,
        service: str,
        producer: Sink,
        check: Check,
        writer: StoreWriter[R],
        erase: Callable[[str], int],
        ledger: ErasureLedger | None = None,
    ) -> None:
        self._topics = settings.kafka.topics
        self._service = service
        self._dead_letters = DeadLetters.of(settings.kafka, producer, service)
        self._check = check
        self._writer = writer
        self._erase = erase
        self._ledger = ledger
        self._log = get_logger(service)
        self._tracer = get_tracer(__name__)

    def prepare(self, batch: list[Message]) -> Prepared[R]:
        # Each record's span (a child of its producer's) covers its preparation; the store
        # write's span links to them.
        spans = {id(msg): start_record_span(self._tracer, msg) for msg in batch}
        try:
            return self._prepare(batch, spans)
        finally:
            for span in spans.values():
                span.end()

    def _prepare(self, batch: list[Message], spans: dict[int, Span]) -> Prepared[R]:
        topics, ledger = self._topics, self._ledger
        plan = plan_batch(batch, topics.enriched, topics.erasure, self._check)
        if self._writer.screen is not None and plan.messages:
            for enriched, rejection in self._writer.screen(list(plan.messages.values())):
                plan.reject(enriched.message.message_id, rejection)
        if ledger is not None:
            ledger.record({user: (plan.erasures[user], at) for user, at in plan.erased_at.items()})
        messages = list(plan.messages.values())
        if ledger is not None and messages:
            messages = drop_erased(messages, ledger.erased_at(m.message.user_id for m in messages))
            if len(messages) < len(plan.messages):
                dropped = len(plan.messages) - len(messages)
                ERASED_DROPPED.labels(self._service).inc(dropped)
                self._log.info("erased_messages_dropped", count=dropped)
        rows = self._writer.rows(messages) if messages else None
        # Last, so that a step above that raises RetryableError (the prepare is then
        # retried) sends none of them twice.
        for msg, rejection in plan.rejected:
            with use_span(spans[id(msg)]):
                self._dead_letters.send(msg, rejection)
        links: list[Link] = []
        if tracing_enabled():
            written = [spans[id(plan.origins[m.message.message_id])] for m in messages]
            for span, message in zip(written, messages, strict=True):
                span.set_attribute("mpp.message_id", message.message.message_id)
            links = links_to(written)
        return Prepared(plan.erasures, rows, len(messages), links)

    def apply(self, prepared: Prepared[R]) -> None:
        for user_id, request_id in prepared.erasures.items():
            removed = self._erase(user_id)
            # The user id is not logged: the request id traces the erasure.
            self._log.info("user_erased", request_id=request_id, removed=removed)
        if prepared.rows is not None:
            writer = self._writer
            with store_span(
                self._tracer, writer.store, writer.operation, prepared.count, prepared.links
            ):
                writer.write(prepared.rows)

    def __call__(self, batch: list[Message]) -> None:
        self.apply(self.prepare(batch))


def drop_erased(
    messages: Sequence[events_pb2.EnrichedMessage], erased_at: dict[str, datetime]
) -> list[events_pb2.EnrichedMessage]:
    """The messages not sent by an erased user at or before that user's erasure."""
    kept = []
    for enriched in messages:
        at = erased_at.get(enriched.message.user_id)
        if at is not None and enriched.message.timestamp.ToDatetime(tzinfo=UTC) <= at:
            continue
        kept.append(enriched)
    return kept


class Store(Protocol):
    """What a writer needs of its store besides the write itself."""

    def delete_user(self, user_id: str) -> int: ...

    def ping(self) -> str | None: ...


def worker(
    settings: Settings,
    service: str,
    store: Store,
    check: Check,
    writer: StoreWriter[R],
    batching: WriterSettings,
    fatal: tuple[type[BaseException], ...] = (),
) -> Worker:
    """A store writer: ``conversations.enriched`` and ``users.erasure`` in, ``writer`` out,
    erasures recorded in the ledger; ready when the store and PostgreSQL (the ledger) answer.
    ``fatal``: the store's errors that stop the service rather than dead-letter a record."""
    producer = TrackedProducer(settings.kafka, service=service)
    ledger = ErasureLedger(settings)
    return Worker(
        name=service,
        topics=[settings.kafka.topics.enriched, settings.kafka.topics.erasure],
        handler=WriterHandler(
            settings, service, producer, check, writer, store.delete_user, ledger
        ),
        batch_size=batching.batch_size,
        max_wait_s=batching.max_wait_s,
        producer=producer,
        readiness=lambda: store.ping() or ledger.ping(),
        dead_letters=DeadLetters.of(settings.kafka, producer, service),
        fatal=fatal,
    )
