"""Analytics facts and serving aggregates in PostgreSQL (schema: migrations 0002 and 0003).

Facts are keyed by their stable ids: ``message_facts`` by message_id, ``feedback_facts`` by
feedback_id. A replay of the same content writes nothing. A message fact takes its latest
version (a re-enrichment replaces it, as in Milvus and Neo4j); a feedback event is immutable
and keeps its first. Facts of a user erased at or after their time (the ledger,
``mpp.erasure``) are never written. The aggregates of every key that a batch changed (the
users, (campaign, day) pairs, campaigns and (day, channel) pairs of the facts it wrote,
replaced or deleted) are then recomputed from the facts in the same transaction: they always
equal a plain recomputation, whatever was replayed. The definitions:

- ``user_engagement``: per user with any fact; ``messages`` counts messages, ``active_days``
  the UTC days with a message or feedback, ``first_seen``/``last_seen`` span both,
  ``top_intents`` the 5 most frequent intents of the user's messages (ties by name),
  ``campaigns_engaged`` the campaigns of the user's messages, clicks and conversions (sorted).
- ``campaign_performance_daily``: per (campaign, UTC day): messages about it and feedback
  counts by kind; a pair without any fact has no row.
- ``campaign_performance``: the same summed over days, with ``ctr = clicks / impressions`` and
  ``conversion_rate = conversions / clicks`` (0 when the denominator is 0).
- ``daily_activity``: per (UTC day, channel): messages, and ``active_users`` the distinct users
  with a message or feedback that day on that channel.

Writers serialize on one transaction-level advisory lock (``AGGREGATE_LOCK``): two analytics
instances (or ``erase_user``) recomputing the same campaign at once would otherwise each miss
the other's uncommitted facts. Times are UTC; ``day`` is the UTC date of ``occurred_at``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import psycopg
from confluent_kafka import Message
from psycopg.rows import dict_row

from mpp.codecs import Rejection, event_time
from mpp.config import Settings
from mpp.erasure import record_erasure
from mpp.ids import user_hashes
from mpp.kafka import RetryableError
from mpp.logs import get_logger
from mpp.observability import store_operation, store_rows
from mpp.v1 import events_pb2, feedback_pb2
from mpp.writers import MAX_ID_CHARS, decode_known

if TYPE_CHECKING:
    from mpp.warehouse import Warehouse

log = get_logger(__name__)

# pg_advisory_xact_lock key for aggregate recomputation ("mppa").
AGGREGATE_LOCK = 0x6D707061
TOP_INTENTS = 5
UNKNOWN_INTENT = "unknown"
FEEDBACK_KINDS: dict[int, str] = {
    feedback_pb2.FEEDBACK_TYPE_IMPRESSION: "impression",
    feedback_pb2.FEEDBACK_TYPE_CLICK: "click",
    feedback_pb2.FEEDBACK_TYPE_CONVERSION: "conversion",
    feedback_pb2.FEEDBACK_TYPE_DISMISSAL: "dismissal",
}
# Feedback that counts as engaging with a campaign (with messages about it).
ENGAGING_KINDS = ("click", "conversion")


@dataclass(frozen=True)
class MessageFact:
    message_id: str
    user_id: str
    occurred_at: datetime
    channel: str = ""
    intents: tuple[str, ...] = ()
    campaign_ids: tuple[str, ...] = ()

    @property
    def day(self) -> date:
        return self.occurred_at.astimezone(UTC).date()

    @classmethod
    def from_enriched(cls, enriched: events_pb2.EnrichedMessage) -> MessageFact:
        message = enriched.message
        intents = _unique(i.intent for i in enriched.intents if i.intent != UNKNOWN_INTENT)
        campaigns = _unique(c.campaign_id for c in enriched.campaigns if c.campaign_id)
        return cls(
            message_id=message.message_id,
            user_id=message.user_id,
            occurred_at=message.timestamp.ToDatetime(tzinfo=UTC),
            channel=message.channel,
            intents=intents,
            campaign_ids=campaigns,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "user_id": self.user_id,
            "occurred_at": self.occurred_at.isoformat(),
            "day": self.day.isoformat(),
            "channel": self.channel,
            "intents": list(self.intents),
            "campaign_ids": list(self.campaign_ids),
        }


@dataclass(frozen=True)
class FeedbackFact:
    feedback_id: str
    user_id: str
    campaign_id: str
    kind: str
    occurred_at: datetime
    channel: str = ""
    recommendation_id: str = ""

    @property
    def day(self) -> date:
        return self.occurred_at.astimezone(UTC).date()

    @classmethod
    def from_event(cls, event: feedback_pb2.FeedbackEvent) -> FeedbackFact:
        return cls(
            feedback_id=event.feedback_id,
            user_id=event.user_id,
            campaign_id=event.campaign_id,
            kind=FEEDBACK_KINDS[event.type],
            occurred_at=event.timestamp.ToDatetime(tzinfo=UTC),
            channel=event.channel,
            recommendation_id=event.recommendation_id,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "feedback_id": self.feedback_id,
            "user_id": self.user_id,
            "campaign_id": self.campaign_id,
            "kind": self.kind,
            "occurred_at": self.occurred_at.isoformat(),
            "day": self.day.isoformat(),
            "channel": self.channel,
            "recommendation_id": self.recommendation_id,
        }


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


# -- decoding a batch -------------------------------------------------------------------------


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


def message_fact(value: bytes | None) -> MessageFact:
    """The fact of a ``conversations.enriched`` record; raises Rejection when unusable."""
    enriched = decode_known(events_pb2.EnrichedMessage, value)
    message = enriched.message
    _check_id("message.message_id", message.message_id)
    _check_id("message.user_id", message.user_id)
    if not message.HasField("timestamp"):
        raise Rejection(
            events_pb2.ERROR_CODE_TIMESTAMP_MISSING,
            "message.timestamp",
            "message.timestamp is not set; ingest always sets it",
        )
    event_time(message.timestamp, "message.timestamp")
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
    if not event.HasField("timestamp"):
        raise Rejection(
            events_pb2.ERROR_CODE_TIMESTAMP_MISSING,
            "timestamp",
            "feedback timestamp is not set; set when the user saw or acted on the campaign",
        )
    event_time(event.timestamp, "timestamp")
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
                raise Rejection(
                    events_pb2.ERROR_CODE_PROCESSING_FAILED,
                    "",
                    f"record from topic {topic!r}, which this service does not read",
                )
        except Rejection as rejection:
            plan.rejected.append((msg, rejection))
    return plan


# -- writing ----------------------------------------------------------------------------------


@dataclass
class Touched:
    """The aggregate keys whose facts changed."""

    users: set[str] = field(default_factory=set)
    campaign_days: set[tuple[str, date]] = field(default_factory=set)
    day_channels: set[tuple[date, str]] = field(default_factory=set)

    @property
    def campaigns(self) -> set[str]:
        return {c for c, _ in self.campaign_days}

    def add_message(self, user_id: str, day: date, channel: str, campaigns: Iterable[str]) -> None:
        self.users.add(user_id)
        self.day_channels.add((day, channel))
        self.campaign_days.update((c, day) for c in campaigns)

    def add_feedback(self, user_id: str, day: date, channel: str, campaign_id: str) -> None:
        self.users.add(user_id)
        self.day_channels.add((day, channel))
        self.campaign_days.add((campaign_id, day))


@dataclass(frozen=True)
class WriteResult:
    messages_inserted: int
    feedback_inserted: int
    messages_erased: int
    feedback_erased: int
    users_recomputed: int
    campaigns_recomputed: int
    # Message ids of the batch that another user already owns: not written (their facts
    # stay with the first user); the caller dead-letters them (MESSAGE_ID_CONFLICT).
    message_id_conflicts: tuple[str, ...] = ()


# Facts of a user erased at or after their time are not written (``mpp.erasure``: the ledger
# names users by a keyed hash of their id, computed here in Python under every key in use and
# passed as ``user_hashes``): a replay, or a message still on its way when the erasure came,
# cannot bring the user back.
_NOT_ERASED = """
NOT EXISTS (SELECT 1 FROM erased_users e
            WHERE e.user_hash = ANY(x.user_hashes)
              AND x.occurred_at <= e.erased_at)
"""

# A message fact takes its latest version: a replay of the same content changes nothing (and
# returns nothing); another content (a re-enrichment) replaces the row, and both the old and
# the new keys are returned so that the aggregates of both are recomputed. ``recorded_at``
# moves, so that the warehouse sync carries the new version. A message_id that another user
# already owns is never moved to the new one: its row stays, and the id is returned as a
# conflict (kind 'conflict', user_id = the message_id) for the dead-letter queue.
_INSERT_MESSAGES = f"""
WITH incoming AS (
    SELECT * FROM jsonb_to_recordset(%s::jsonb) AS x(
        message_id text, user_id text, user_hashes text[], occurred_at timestamptz, day date,
        channel text, intents text[], campaign_ids text[])
    WHERE {_NOT_ERASED}
), conflicts AS (
    SELECT i.message_id FROM message_facts f JOIN incoming i USING (message_id)
    WHERE f.user_id <> i.user_id
), replaced AS (
    SELECT f.user_id, f.day, f.channel, f.campaign_ids
    FROM message_facts f JOIN incoming i USING (message_id)
    WHERE f.user_id = i.user_id
      AND (f.occurred_at, f.channel, f.intents, f.campaign_ids)
          IS DISTINCT FROM (i.occurred_at, i.channel, i.intents, i.campaign_ids)
), written AS (
    INSERT INTO message_facts
        (message_id, user_id, occurred_at, day, channel, intents, campaign_ids)
    SELECT message_id, user_id, occurred_at, day, channel, intents, campaign_ids FROM incoming
    ON CONFLICT (message_id) DO UPDATE
        SET occurred_at = EXCLUDED.occurred_at,
            day = EXCLUDED.day, channel = EXCLUDED.channel, intents = EXCLUDED.intents,
            campaign_ids = EXCLUDED.campaign_ids, recorded_at = now()
        WHERE message_facts.user_id = EXCLUDED.user_id
          AND (message_facts.occurred_at, message_facts.channel,
               message_facts.intents, message_facts.campaign_ids)
              IS DISTINCT FROM (EXCLUDED.occurred_at, EXCLUDED.channel,
                                EXCLUDED.intents, EXCLUDED.campaign_ids)
    RETURNING user_id, day, channel, campaign_ids
)
SELECT user_id, day, channel, campaign_ids, 'written' FROM written
UNION ALL
SELECT user_id, day, channel, campaign_ids, 'replaced' FROM replaced
UNION ALL
SELECT message_id, NULL::date, NULL, NULL::text[], 'conflict' FROM conflicts
"""

# A feedback event is immutable: its first version counts, a replay inserts nothing.
_INSERT_FEEDBACK = f"""
INSERT INTO feedback_facts
    (feedback_id, user_id, campaign_id, kind, occurred_at, day, channel, recommendation_id)
SELECT feedback_id, user_id, campaign_id, kind, occurred_at, day, channel, recommendation_id
FROM jsonb_to_recordset(%s::jsonb) AS x(
    feedback_id text, user_id text, user_hashes text[], campaign_id text, kind text,
    occurred_at timestamptz, day date, channel text, recommendation_id text)
WHERE {_NOT_ERASED}
ON CONFLICT (feedback_id) DO NOTHING
RETURNING user_id, day, channel, campaign_id
"""

_RECOMPUTE_USERS = (
    """
DELETE FROM user_engagement WHERE user_id = ANY(%(users)s)
""",
    """
INSERT INTO user_engagement
    (user_id, messages, active_days, first_seen, last_seen, top_intents, campaigns_engaged)
WITH events AS (
    SELECT user_id, occurred_at, day FROM message_facts WHERE user_id = ANY(%(users)s)
    UNION ALL
    SELECT user_id, occurred_at, day FROM feedback_facts WHERE user_id = ANY(%(users)s)
), span AS (
    SELECT user_id, count(DISTINCT day) AS active_days,
           min(occurred_at) AS first_seen, max(occurred_at) AS last_seen
    FROM events GROUP BY user_id
), messages AS (
    SELECT user_id, count(*) AS messages
    FROM message_facts WHERE user_id = ANY(%(users)s) GROUP BY user_id
), intent_counts AS (
    SELECT user_id, intent, count(*) AS n
    FROM message_facts, unnest(intents) AS intent
    WHERE user_id = ANY(%(users)s) GROUP BY user_id, intent
), top AS (
    SELECT user_id, (array_agg(intent ORDER BY n DESC, intent))[1:%(top)s] AS top_intents
    FROM intent_counts GROUP BY user_id
), engaged AS (
    SELECT user_id, array_agg(campaign_id ORDER BY campaign_id) AS campaigns
    FROM (
        SELECT user_id, unnest(campaign_ids) AS campaign_id
        FROM message_facts WHERE user_id = ANY(%(users)s)
        UNION
        SELECT user_id, campaign_id FROM feedback_facts
        WHERE user_id = ANY(%(users)s) AND kind = ANY(%(engaging)s)
    ) c GROUP BY user_id
)
SELECT span.user_id, coalesce(messages.messages, 0), span.active_days, span.first_seen,
       span.last_seen, coalesce(top.top_intents, '{}'), coalesce(engaged.campaigns, '{}')
FROM span
LEFT JOIN messages USING (user_id)
LEFT JOIN top USING (user_id)
LEFT JOIN engaged USING (user_id)
""",
)

_RECOMPUTE_CAMPAIGN_DAYS = (
    """
DELETE FROM campaign_performance_daily d
USING unnest(%(campaigns)s::text[], %(days)s::date[]) AS k(campaign_id, day)
WHERE d.campaign_id = k.campaign_id AND d.day = k.day
""",
    """
INSERT INTO campaign_performance_daily
    (campaign_id, day, messages, impressions, clicks, conversions, dismissals)
WITH k AS (
    SELECT * FROM unnest(%(campaigns)s::text[], %(days)s::date[]) AS k(campaign_id, day)
), m AS (
    SELECT k.campaign_id, k.day, count(f.message_id) AS messages
    FROM k LEFT JOIN message_facts f
      ON f.day = k.day AND f.campaign_ids @> ARRAY[k.campaign_id]
    GROUP BY k.campaign_id, k.day
), fb AS (
    SELECT k.campaign_id, k.day,
           count(*) FILTER (WHERE f.kind = 'impression') AS impressions,
           count(*) FILTER (WHERE f.kind = 'click') AS clicks,
           count(*) FILTER (WHERE f.kind = 'conversion') AS conversions,
           count(*) FILTER (WHERE f.kind = 'dismissal') AS dismissals
    FROM k LEFT JOIN feedback_facts f ON f.campaign_id = k.campaign_id AND f.day = k.day
    GROUP BY k.campaign_id, k.day
)
SELECT campaign_id, day, m.messages, fb.impressions, fb.clicks, fb.conversions, fb.dismissals
FROM m JOIN fb USING (campaign_id, day)
WHERE m.messages + fb.impressions + fb.clicks + fb.conversions + fb.dismissals > 0
""",
)

_RECOMPUTE_CAMPAIGNS = (
    """
DELETE FROM campaign_performance WHERE campaign_id = ANY(%(campaigns)s)
""",
    """
INSERT INTO campaign_performance
    (campaign_id, messages, impressions, clicks, conversions, dismissals, ctr, conversion_rate)
SELECT campaign_id, sum(messages), sum(impressions), sum(clicks), sum(conversions),
       sum(dismissals),
       CASE WHEN sum(impressions) > 0 THEN sum(clicks)::float8 / sum(impressions) ELSE 0 END,
       CASE WHEN sum(clicks) > 0 THEN sum(conversions)::float8 / sum(clicks) ELSE 0 END
FROM campaign_performance_daily
WHERE campaign_id = ANY(%(campaigns)s)
GROUP BY campaign_id
""",
)

_RECOMPUTE_DAILY = (
    """
DELETE FROM daily_activity a
USING unnest(%(days)s::date[], %(channels)s::text[]) AS k(day, channel)
WHERE a.day = k.day AND a.channel = k.channel
""",
    """
INSERT INTO daily_activity (day, channel, messages, active_users)
WITH k AS (
    SELECT * FROM unnest(%(days)s::date[], %(channels)s::text[]) AS k(day, channel)
), events AS (
    SELECT f.day, f.channel, f.user_id, 1 AS message
    FROM message_facts f JOIN k ON f.day = k.day AND f.channel = k.channel
    UNION ALL
    SELECT f.day, f.channel, f.user_id, 0
    FROM feedback_facts f JOIN k ON f.day = k.day AND f.channel = k.channel
)
SELECT day, channel, sum(message), count(DISTINCT user_id) FROM events GROUP BY day, channel
""",
)


def _hashed(fact: dict[str, Any]) -> dict[str, Any]:
    """A fact's JSON with the ledger's names for its user (``_NOT_ERASED``)."""
    return {**fact, "user_hashes": user_hashes(fact["user_id"])}


def _run(conn: psycopg.Connection[Any], statements: tuple[str, str], params: Any) -> None:
    # One statement per call: the extended protocol takes no multi-statement strings.
    for statement in statements:
        conn.execute(statement, params, prepare=False)


def recompute(conn: psycopg.Connection[Any], touched: Touched) -> None:
    """Recompute the aggregates of the touched keys from the facts (inside a transaction):
    delete their rows, insert them again from the facts (keys without facts stay deleted)."""
    if touched.users:
        _run(
            conn,
            _RECOMPUTE_USERS,
            {
                "users": sorted(touched.users),
                "top": TOP_INTENTS,
                "engaging": list(ENGAGING_KINDS),
            },
        )
    if touched.campaign_days:
        pairs = sorted(touched.campaign_days)
        _run(
            conn,
            _RECOMPUTE_CAMPAIGN_DAYS,
            {"campaigns": [c for c, _ in pairs], "days": [d for _, d in pairs]},
        )
        _run(conn, _RECOMPUTE_CAMPAIGNS, {"campaigns": sorted(touched.campaigns)})
    if touched.day_channels:
        pairs_ = sorted(touched.day_channels)
        _run(
            conn,
            _RECOMPUTE_DAILY,
            {"days": [d for d, _ in pairs_], "channels": [c for _, c in pairs_]},
        )


def _delete_user_facts(
    conn: psycopg.Connection[Any], users: Sequence[str], touched: Touched
) -> tuple[int, int]:
    messages = conn.execute(
        "DELETE FROM message_facts WHERE user_id = ANY(%s)"
        " RETURNING user_id, day, channel, campaign_ids",
        (list(users),),
    ).fetchall()
    for user_id, day, channel, campaigns in messages:
        touched.add_message(user_id, day, channel, campaigns)
    feedback = conn.execute(
        "DELETE FROM feedback_facts WHERE user_id = ANY(%s)"
        " RETURNING user_id, day, channel, campaign_id",
        (list(users),),
    ).fetchall()
    for user_id, day, channel, campaign_id in feedback:
        touched.add_feedback(user_id, day, channel, campaign_id)
    # A user with no facts left has no engagement row; recompute deletes it.
    touched.users.update(users)
    return len(messages), len(feedback)


def write_batch(
    conn: psycopg.Connection[Any],
    messages: Sequence[MessageFact],
    feedback: Sequence[FeedbackFact],
    erasures: Sequence[str] = (),
    warehouse: str | None = None,
    ledger: Mapping[str, tuple[str, datetime]] | None = None,
) -> WriteResult:
    """Erase, write facts (replays write nothing), recompute what changed: one transaction.

    ``warehouse`` (a ``mpp.warehouse.warehouse_id``) records the erasures that the warehouse
    still has to apply. ``ledger`` (user -> (request id, erasure time)) records erasures in
    ``erased_users`` first, so that this batch's and any later facts of those users sent
    before their erasure are not written. Raises ``RetryableError`` when PostgreSQL cannot be
    reached; nothing is then written.
    """
    touched = Touched()
    conflicts: list[str] = []
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (AGGREGATE_LOCK,))
            for user_id, (request_id, erased_at) in (ledger or {}).items():
                record_erasure(conn, user_id, request_id, erased_at)
            erased = _delete_user_facts(conn, erasures, touched) if erasures else (0, 0)
            if erasures and warehouse is not None:
                conn.execute(
                    "INSERT INTO analytics_pending_erasures (warehouse, user_id)"
                    " SELECT %s, unnest(%s::text[]) ON CONFLICT DO NOTHING",
                    (warehouse, list(erasures)),
                )
            inserted_messages = inserted_feedback = 0
            if messages:
                rows = conn.execute(
                    _INSERT_MESSAGES, (json.dumps([_hashed(m.as_json()) for m in messages]),)
                ).fetchall()
                inserted_messages = sum(1 for *_, kind in rows if kind == "written")
                for user_id, day, channel, campaigns, kind in rows:
                    if kind == "conflict":
                        conflicts.append(user_id)  # the message_id (see _INSERT_MESSAGES)
                    else:
                        touched.add_message(user_id, day, channel, campaigns)
            if feedback:
                rows = conn.execute(
                    _INSERT_FEEDBACK, (json.dumps([_hashed(f.as_json()) for f in feedback]),)
                ).fetchall()
                inserted_feedback = len(rows)
                for user_id, day, channel, campaign_id in rows:
                    touched.add_feedback(user_id, day, channel, campaign_id)
            recompute(conn, touched)
    except psycopg.OperationalError as exc:
        raise RetryableError(f"postgres: {exc}", "postgres") from exc
    return WriteResult(
        messages_inserted=inserted_messages,
        feedback_inserted=inserted_feedback,
        messages_erased=erased[0],
        feedback_erased=erased[1],
        users_recomputed=len(touched.users),
        campaigns_recomputed=len(touched.campaigns),
        message_id_conflicts=tuple(sorted(conflicts)),
    )


class AnalyticsStore:
    """One PostgreSQL connection for the service, reopened after a failure."""

    def __init__(self, settings: Settings) -> None:
        self._conninfo = settings.postgres.conninfo()
        self._conn: psycopg.Connection[Any] | None = None

    def connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            try:
                self._conn = psycopg.connect(self._conninfo, autocommit=True)
            except psycopg.OperationalError as exc:
                raise RetryableError(f"postgres: {exc}", "postgres") from exc
        return self._conn

    def write(
        self,
        messages: Sequence[MessageFact],
        feedback: Sequence[FeedbackFact],
        erasures: Sequence[str] = (),
        warehouse: str | None = None,
        ledger: Mapping[str, tuple[str, datetime]] | None = None,
    ) -> WriteResult:
        try:
            with store_operation("postgres", "write_batch"):
                result = write_batch(
                    self.connection(), messages, feedback, erasures, warehouse, ledger
                )
        except RetryableError:
            self.close()
            raise
        store_rows("postgres", "write_batch", result.messages_inserted + result.feedback_inserted)
        if result.messages_erased or result.feedback_erased:
            store_rows("postgres", "erase_facts", result.messages_erased + result.feedback_erased)
        return result

    def ping(self) -> str | None:
        """None when PostgreSQL answers; its own short connection, so that a probe never
        touches the loop's."""
        try:
            with psycopg.connect(self._conninfo, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            return f"postgres: {str(exc).strip()[:200]}"
        return None

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


# -- reading ----------------------------------------------------------------------------------

AGGREGATE_TABLES = (
    "user_engagement",
    "campaign_performance_daily",
    "campaign_performance",
    "daily_activity",
)
FACT_TABLES = ("message_facts", "feedback_facts")
# Columns that identify a row, per table (the warehouse merges by them too).
KEYS: dict[str, tuple[str, ...]] = {
    "message_facts": ("message_id",),
    "feedback_facts": ("feedback_id",),
    "user_engagement": ("user_id",),
    "campaign_performance_daily": ("campaign_id", "day"),
    "campaign_performance": ("campaign_id",),
    "daily_activity": ("day", "channel"),
}
# Bookkeeping columns that are not part of an aggregate's value.
VOLATILE = frozenset({"updated_at", "recorded_at"})


def read_table(
    conn: psycopg.Connection[Any], table: str, *, volatile: bool = False
) -> list[dict[str, Any]]:
    """Every row of an analytics table, sorted by its key (``volatile``: with updated_at...)."""
    if table not in KEYS:
        raise ValueError(f"{table!r} is not an analytics table; one of {', '.join(KEYS)}")
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT * FROM {table} ORDER BY {', '.join(KEYS[table])}")
        rows = cur.fetchall()
    if not volatile:
        rows = [{k: v for k, v in row.items() if k not in VOLATILE} for row in rows]
    return rows


def campaign_report(
    conn: psycopg.Connection[Any], limit: int = 20, since: date | None = None
) -> list[dict[str, Any]]:
    """Campaigns by impressions then messages; totals over all days, or since a day."""
    with conn.cursor(row_factory=dict_row) as cur:
        if since is None:
            cur.execute(
                "SELECT campaign_id, messages, impressions, clicks, conversions, dismissals,"
                " ctr, conversion_rate FROM campaign_performance"
                " ORDER BY impressions DESC, messages DESC, campaign_id LIMIT %s",
                (limit,),
            )
        else:
            cur.execute(
                """SELECT campaign_id, sum(messages)::bigint AS messages,
                          sum(impressions)::bigint AS impressions, sum(clicks)::bigint AS clicks,
                          sum(conversions)::bigint AS conversions,
                          sum(dismissals)::bigint AS dismissals,
                          CASE WHEN sum(impressions) > 0
                               THEN sum(clicks)::float8 / sum(impressions) ELSE 0 END AS ctr,
                          CASE WHEN sum(clicks) > 0
                               THEN sum(conversions)::float8 / sum(clicks) ELSE 0 END
                               AS conversion_rate
                   FROM campaign_performance_daily WHERE day >= %s GROUP BY campaign_id
                   ORDER BY impressions DESC, messages DESC, campaign_id LIMIT %s""",
                (since, limit),
            )
        return cur.fetchall()


def campaign_daily(
    conn: psycopg.Connection[Any], campaign_ids: Sequence[str], since: date | None = None
) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT campaign_id, day, messages, impressions, clicks, conversions, dismissals"
            " FROM campaign_performance_daily WHERE campaign_id = ANY(%s)"
            " AND day >= coalesce(%s, '-infinity'::date) ORDER BY campaign_id, day",
            (list(campaign_ids), since),
        )
        return cur.fetchall()


def activity_report(
    conn: psycopg.Connection[Any], since: date | None = None
) -> list[dict[str, Any]]:
    """Daily activity per channel, oldest day first."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT day, channel, messages, active_users FROM daily_activity"
            " WHERE day >= coalesce(%s, '-infinity'::date) ORDER BY day, channel",
            (since,),
        )
        return cur.fetchall()


def activity_totals(
    conn: psycopg.Connection[Any], since: date | None = None
) -> list[dict[str, Any]]:
    """Per day over all channels: messages and distinct active users (from the facts: a user
    active on two channels counts once)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            """SELECT day, sum(message)::bigint AS messages,
                      count(DISTINCT user_id) AS active_users
               FROM (SELECT day, user_id, 1 AS message FROM message_facts
                     WHERE day >= coalesce(%(since)s, '-infinity'::date)
                     UNION ALL
                     SELECT day, user_id, 0 FROM feedback_facts
                     WHERE day >= coalesce(%(since)s, '-infinity'::date)) e
               GROUP BY day ORDER BY day""",
            {"since": since},
        )
        return cur.fetchall()


def user_engagement(conn: psycopg.Connection[Any], user_id: str) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM user_engagement WHERE user_id = %s", (user_id,))
        return cur.fetchone()


def top_users(conn: psycopg.Connection[Any], limit: int = 10) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT user_id, messages, active_days, first_seen, last_seen, top_intents,"
            " campaigns_engaged FROM user_engagement"
            " ORDER BY messages DESC, active_days DESC, user_id LIMIT %s",
            (limit,),
        )
        return cur.fetchall()


def summary(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    row = conn.execute(
        """SELECT (SELECT count(*) FROM message_facts), (SELECT count(*) FROM feedback_facts),
                  (SELECT count(*) FROM user_engagement),
                  (SELECT count(*) FROM campaign_performance),
                  (SELECT min(day) FROM daily_activity), (SELECT max(day) FROM daily_activity)"""
    ).fetchone()
    assert row is not None
    return {
        "messages": row[0],
        "feedback_events": row[1],
        "users": row[2],
        "campaigns": row[3],
        "first_day": row[4],
        "last_day": row[5],
    }


def jsonable(value: Any) -> Any:
    """Dates and times as ISO 8601 strings (UTC), recursively."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


# -- the right to be forgotten ----------------------------------------------------------------


@dataclass(frozen=True)
class Erasure:
    messages: int
    feedback_events: int
    # Rows the warehouse deleted now (facts and engagement rows of this user and of any other
    # erasure still pending there); None when the warehouse part is still pending.
    warehouse_rows: int | None

    @property
    def warehouse_pending(self) -> bool:
        return self.warehouse_rows is None


def erase_user(
    settings: Settings,
    user_id: str,
    *,
    warehouse: Warehouse | None = None,
    warehouse_timeout_s: float | None = None,
    request_id: str | None = None,
) -> Erasure:
    """Forget ``user_id`` in the analytics tables of PostgreSQL and in the warehouse.

    PostgreSQL: the user's facts are deleted and every aggregate they counted in recomputed,
    in one transaction; the erasure is recorded in the ledger (``mpp.erasure``, so that the
    user's messages still on their way are not written back) and for the warehouse in the same
    transaction.
    Warehouse (``warehouse``, else the configured one): the user's facts and engagement row
    are deleted at once when it answers within ``warehouse_timeout_s`` (default:
    ``MPP_WAREHOUSE__ERASURE_TIMEOUT_S``, 30 s, a running sync included); otherwise the erasure
    stays recorded and the next sync applies it (``Erasure.warehouse_pending``). The anonymous
    aggregates there (campaigns, daily activity) follow at the next sync. Idempotent.
    Raises ``mpp.kafka.RetryableError`` when PostgreSQL cannot be reached.
    """
    from mpp.warehouse import WarehouseError, open_warehouse, warehouse_id
    from mpp.warehouse.sync import WarehouseLock, apply_pending_erasures

    if not user_id:
        raise ValueError("erase_user needs a user_id; got an empty one")
    target = warehouse.id if warehouse is not None else warehouse_id(settings)
    store = AnalyticsStore(settings)
    try:
        ledger = {user_id: (request_id or f"analytics-{uuid.uuid4().hex}", datetime.now(UTC))}
        result = store.write([], [], [user_id], warehouse=target, ledger=ledger)
        rows: int | None = None
        opened: Warehouse | None = None
        try:
            opened = warehouse or open_warehouse(settings)
            conn = store.connection()
            timeout = warehouse_timeout_s or settings.warehouse.erasure_timeout_s
            with WarehouseLock(conn, target, timeout):
                rows = apply_pending_erasures(conn, opened)[1]
        except (WarehouseError, psycopg.Error, RetryableError) as exc:
            log.warning("warehouse_erasure_pending", warehouse=target, error=str(exc)[:300])
        finally:
            if opened is not None and warehouse is None:
                opened.close()
    finally:
        store.close()
    return Erasure(result.messages_erased, result.feedback_erased, rows)
