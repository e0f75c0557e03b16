"""The analytics service's records: Kafka records in, facts and erasures out, sorted.

``plan_batch`` decodes one batch of ``conversations.enriched`` (``EnrichedMessage``),
``feedback.events`` (``FeedbackEvent``) and ``users.erasure`` (``ErasureRequest``) records
into a ``Batch``: the facts (``mpp.analytics.facts``) and erasures the store is to write, and
the records it cannot use, each with its ``Rejection`` for the dead-letter queue. Nothing is
written here. ``bound_lengths`` then refuses the facts whose ids fail validation or whose
indexed values are too long for PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from confluent_kafka import Message

from mpp.analytics.facts import FEEDBACK_KINDS, FeedbackFact, MessageFact
from mpp.codecs import Rejection, event_time
from mpp.stores.base import MAX_ID_CHARS
from mpp.v1 import events_pb2, feedback_pb2
from mpp.validation import MESSAGE_ID, USER_ID
from mpp.writers import decode_known, unread_topic


def _schema(field_name: str, detail: str) -> Rejection:
    return Rejection(events_pb2.ERROR_CODE_SCHEMA_INVALID, field_name, detail)


def _check_id(
    field_name: str, value: str, code: int = events_pb2.ERROR_CODE_SCHEMA_INVALID
) -> None:
    if not value:
        raise Rejection(code, field_name, f"{field_name} is empty; set it")
    if len(value) > MAX_ID_CHARS:
        raise _schema(
            field_name, f"{field_name} has {len(value)} characters; at most {MAX_ID_CHARS}"
        )
    _check_text(field_name, value)


def _check_text(field_name: str, value: str) -> None:
    # PostgreSQL text cannot hold NUL; such a record would fail its whole batch forever.
    if "\x00" in value:
        raise Rejection(
            events_pb2.ERROR_CODE_FIELD_INVALID,
            field_name,
            f"{field_name} contains a NUL character (U+0000); remove it",
        )


def _check_time(
    event: events_pb2.ValidatedMessage | feedback_pb2.FeedbackEvent, field_name: str, unset: str
) -> None:
    """The event's ``timestamp`` is set (else ``unset`` says why it must be) and in range."""
    if not event.HasField("timestamp"):
        raise Rejection(events_pb2.ERROR_CODE_TIMESTAMP_MISSING, field_name, unset)
    event_time(event.timestamp, field_name)


def message_fact(value: bytes | None) -> MessageFact:
    """The fact of a ``conversations.enriched`` record; raises Rejection when unusable."""
    enriched = decode_known(events_pb2.EnrichedMessage, value)
    message = enriched.message
    _check_id("message.message_id", message.message_id)
    _check_id("message.user_id", message.user_id)
    _check_time(message, "message.timestamp", "message.timestamp is not set; ingest always sets it")
    fact = MessageFact.from_enriched(enriched)
    _check_text("message.channel", fact.channel)
    for name, items in (("intents", fact.intents), ("campaigns", fact.campaign_ids)):
        for item in items:
            _check_text(name, item)
    return fact


def feedback_fact(value: bytes | None) -> FeedbackFact:
    """The fact of a ``feedback.events`` record; raises Rejection when unusable."""
    event = decode_known(feedback_pb2.FeedbackEvent, value)
    _check_id("feedback_id", event.feedback_id)
    _check_id("user_id", event.user_id, events_pb2.ERROR_CODE_USER_ID_MISSING)
    _check_id("campaign_id", event.campaign_id)
    if event.type not in FEEDBACK_KINDS:
        raise Rejection(
            events_pb2.ERROR_CODE_FIELD_INVALID,
            "type",
            f"feedback type {event.type} is not one of impression, click, conversion, dismissal "
            "(FEEDBACK_TYPE_IMPRESSION..FEEDBACK_TYPE_DISMISSAL)",
        )
    _check_time(
        event,
        "timestamp",
        "feedback timestamp is not set; set when the user saw or acted on the campaign",
    )
    _check_text("channel", event.channel)
    _check_text("recommendation_id", event.recommendation_id)
    return FeedbackFact.from_event(event)


def erased_user(value: bytes | None) -> tuple[str, str, datetime]:
    """(user_id, request_id, requested_at) of a ``users.erasure`` record (now when the request
    has no time); raises Rejection when unusable."""
    request = decode_known(feedback_pb2.ErasureRequest, value)
    if not request.user_id:
        raise Rejection(
            events_pb2.ERROR_CODE_USER_ID_MISSING,
            "user_id",
            "erasure request without user_id; set the user to forget",
        )
    _check_text("user_id", request.user_id)
    requested_at = (
        event_time(request.requested_at, "requested_at")
        if request.HasField("requested_at")
        else datetime.now(UTC)
    )
    return request.user_id, request.request_id, requested_at


@dataclass
class Batch:
    """What one Kafka batch asks of the analytics tables, in an order that keeps its meaning:
    erasures first, then facts; a user's erasure drops that user's facts read before it."""

    messages: dict[str, MessageFact] = field(default_factory=dict)
    feedback: dict[str, FeedbackFact] = field(default_factory=dict)
    erasures: dict[str, str] = field(default_factory=dict)
    # When each erasure was requested, for the ledger (``mpp.erasure``).
    erased_at: dict[str, datetime] = field(default_factory=dict)
    rejected: list[tuple[Message, Rejection]] = field(default_factory=list)
    # The record each fact came from (the one kept), to dead-letter a fact PostgreSQL refuses.
    origins: dict[tuple[str, str], Message] = field(default_factory=dict)

    def erase(self, user_id: str, request_id: str, requested_at: datetime) -> None:
        self.erasures[user_id] = request_id
        self.erased_at[user_id] = max(requested_at, self.erased_at.get(user_id, requested_at))
        self.messages = {k: v for k, v in self.messages.items() if v.user_id != user_id}
        self.feedback = {k: v for k, v in self.feedback.items() if v.user_id != user_id}

    @property
    def ledger(self) -> dict[str, tuple[str, datetime]]:
        """The batch's erasures as ``write_batch`` records them: user -> (request, time)."""
        return {user: (self.erasures[user], at) for user, at in self.erased_at.items()}

    @property
    def empty(self) -> bool:
        return not (self.messages or self.feedback or self.erasures)


def plan_batch(batch: Sequence[Message], enriched: str, feedback: str, erasure: str) -> Batch:
    """Decode and sort a batch; nothing is written here. As in the tables, a message fact
    keeps its last version (its latest enrichment), a feedback event its first."""
    plan = Batch()
    for msg in batch:
        try:
            topic = msg.topic()
            if topic == enriched:
                fact = message_fact(msg.value())
                plan.messages.pop(fact.message_id, None)
                plan.messages[fact.message_id] = fact
                plan.origins[("message", fact.message_id)] = msg
            elif topic == feedback:
                event = feedback_fact(msg.value())
                if event.feedback_id not in plan.feedback:
                    plan.feedback[event.feedback_id] = event
                    plan.origins[("feedback", event.feedback_id)] = msg
            elif topic == erasure:
                plan.erase(*erased_user(msg.value()))
            else:
                raise unread_topic(topic)
        except Rejection as rejection:
            plan.rejected.append((msg, rejection))
    return plan


# Longest channel kept (as in Milvus' column): channels are names such as "web" or "sms".
MAX_CHANNEL_CHARS = 64


def _too_long(values: list[tuple[str, str, int]]) -> Rejection | None:
    for name, value, limit in values:
        if len(value) > limit:
            return Rejection(
                events_pb2.ERROR_CODE_FIELD_INVALID,
                name,
                f"{name} has {len(value)} characters; at most {limit}",
            )
    return None


def _invalid_ids(user_id: str, message_id: str | None = None) -> Rejection | None:
    # As ingest and the writers check them: a fact whose id the APIs refuse can't be erased.
    if not USER_ID.fullmatch(user_id):
        return Rejection(
            events_pb2.ERROR_CODE_USER_ID_INVALID,
            "user_id",
            f"user_id {user_id[:80]!r} does not match {USER_ID.pattern}",
        )
    if message_id is not None and not MESSAGE_ID.fullmatch(message_id):
        return Rejection(
            events_pb2.ERROR_CODE_SCHEMA_INVALID,
            "message.message_id",
            f"message.message_id {message_id[:80]!r} does not match {MESSAGE_ID.pattern}",
        )
    return None


def bound_lengths(plan: Batch) -> None:
    """Move the facts whose ids fail validation, or whose indexed values are too long, to
    ``plan.rejected``."""
    for key, fact in list(plan.messages.items()):
        rejection = _invalid_ids(fact.user_id, fact.message_id) or _too_long(
            [
                ("message.channel", fact.channel, MAX_CHANNEL_CHARS),
                *(("intents", name, MAX_ID_CHARS) for name in fact.intents),
                *(("campaigns", c, MAX_ID_CHARS) for c in fact.campaign_ids),
            ]
        )
        if rejection is not None:
            del plan.messages[key]
            plan.rejected.append((plan.origins[("message", key)], rejection))
    for key, event in list(plan.feedback.items()):
        rejection = _invalid_ids(event.user_id) or _too_long(
            [
                ("channel", event.channel, MAX_CHANNEL_CHARS),
                ("recommendation_id", event.recommendation_id, MAX_ID_CHARS),
            ]
        )
        if rejection is not None:
            del plan.feedback[key]
            plan.rejected.append((plan.origins[("feedback", key)], rejection))
