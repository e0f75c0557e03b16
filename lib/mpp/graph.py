"""Users, messages, campaigns and intents in Neo4j: the platform's rules over the neo4j driver.

The graph:
    (User {id, first_seen, last_seen})-[:SENT]->(Message {id, ts, text, channel, locale, model,
    campaign_id})-[:ABOUT {score, source}]->(Campaign {id}),
    (Message)-[:HAS_INTENT {score}]->(Intent {name})

Contracts:
- ``merge_messages`` writes a whole batch as ONE parameterized ``UNWIND ... MERGE`` statement in
  one managed transaction. It is idempotent: a replay changes no node or relationship count.
  A message's ABOUT and HAS_INTENT relationships are those of its latest write (links that a
  re-enrichment dropped are removed); a message listed twice in a batch is written once, as
  its last version.
- The "unknown" intent is not a node: it says that no intent was recognised.
- Times are epoch milliseconds, UTC (``ts``, ``first_seen``, ``last_seen``).
- Transient errors (deadlocks between writers, the server away, an expired session) are
  retried inside the driver's managed transaction for ``neo4j.max_transaction_retry_time_s``;
  if they persist, ``mpp.kafka.RetryableError`` hands the batch back to the loop's backoff.
- ``delete_user`` removes the user and their messages (DETACH DELETE); Campaign and Intent
  nodes are shared and stay.
- A message belongs to the user who sent it first (``mpp.ownership``): the MERGE never writes
  a message whose node another user already SENT (the statement itself checks, so even a
  batch prepared before the other one was written cannot move it), and ``screen_message_ids``
  names those messages before the write (one query), to be dead-lettered.

Why this statement shape: on the local Neo4j 5.26, 5,000 messages written as one statement
with FOREACH for the links ran 3-4 times faster than separate statements in one transaction
(MERGE nodes, then MATCH + MERGE relationships); see services/graph-writer/README.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, LiteralString

import neo4j
from neo4j.exceptions import (
    ClientError,
    DriverError,
    Neo4jError,
    ServiceUnavailable,
    SessionExpired,
    TransientError,
)

from mpp.config import Settings
from mpp.kafka import RetryableError
from mpp.logs import get_logger
from mpp.observability import store_operation, store_rows
from mpp.ownership import Conflicts, RecentOwners, screen_owners
from mpp.stores import neo4j_driver
from mpp.v1 import events_pb2

log = get_logger(__name__)

# Metrics: mpp_store_operations_total, mpp_store_operation_duration_seconds (the driver's
# transaction retries included) and mpp_store_rows_total with store="neo4j"
# (``mpp.observability``).
STORE = "neo4j"

UNKNOWN_INTENT = "unknown"

_SOURCES = {
    events_pb2.CAMPAIGN_LINK_SOURCE_EVENT: "event",
    events_pb2.CAMPAIGN_LINK_SOURCE_SIMILARITY: "similarity",
}

SCHEMA: list[LiteralString] = [
    "CREATE CONSTRAINT user_id_unique IF NOT EXISTS FOR (n:User) REQUIRE n.id IS UNIQUE",
    "CREATE CONSTRAINT message_id_unique IF NOT EXISTS FOR (n:Message) REQUIRE n.id IS UNIQUE",
    "CREATE CONSTRAINT campaign_id_unique IF NOT EXISTS FOR (n:Campaign) REQUIRE n.id IS UNIQUE",
    "CREATE CONSTRAINT intent_name_unique IF NOT EXISTS FOR (n:Intent) REQUIRE n.name IS UNIQUE",
    # The recommender reads a user's recent messages.
    "CREATE INDEX message_ts IF NOT EXISTS FOR (n:Message) ON (n.ts)",
]

# One statement per batch. Users come first, one row each with the batch's earliest and latest
# message time (setting them once per message cost about a tenth of the statement's time);
# the messages then MATCH their user. The messages come as columns, one list per property,
# indexed by the row number: a list of maps would carry every key again in every row, which
# cost this process about 2 microseconds a row to pack and Neo4j a few more to read (measured
# alone on 8,000 chitchat messages, ``bench/streaming.py``'s rows). The two CALL blocks drop
# the links a newer enrichment no longer has; FOREACH keeps one row per message (no
# cardinality blow-up) while merging its links. A link is [campaign id, score, source] or
# [intent name, score].
MERGE_MESSAGES: LiteralString = """
UNWIND $users AS usr
MERGE (u:User {id: usr.id})
SET u.first_seen = CASE WHEN u.first_seen IS NULL OR usr.first < u.first_seen
                        THEN usr.first ELSE u.first_seen END,
    u.last_seen = CASE WHEN u.last_seen IS NULL OR usr.last > u.last_seen
                       THEN usr.last ELSE u.last_seen END
WITH count(*) AS users
UNWIND range(0, size($message_id) - 1) AS i
MATCH (u:User {id: $user_id[i]})
MERGE (m:Message {id: $message_id[i]})
WITH u, m, i
WHERE NOT EXISTS { MATCH (o:User)-[:SENT]->(m) WHERE o.id <> u.id }
SET m.ts = $ts[i], m.text = $text[i], m.channel = $channel[i], m.locale = $locale[i],
    m.model = $model[i], m.campaign_id = $campaign_id[i]
MERGE (u)-[:SENT]->(m)
WITH m, $campaigns[i] AS campaigns, $intents[i] AS intents
CALL (m, campaigns) {
  MATCH (m)-[r:ABOUT]->(c:Campaign)
  WHERE NOT c.id IN [l IN campaigns | l[0]]
  DELETE r
}
CALL (m, intents) {
  MATCH (m)-[r:HAS_INTENT]->(i:Intent)
  WHERE NOT i.name IN [l IN intents | l[0]]
  DELETE r
}
FOREACH (l IN campaigns |
  MERGE (c:Campaign {id: l[0]})
  MERGE (m)-[r:ABOUT]->(c)
  SET r.score = l[1], r.source = l[2])
FOREACH (l IN intents |
  MERGE (i:Intent {name: l[0]})
  MERGE (m)-[r:HAS_INTENT]->(i)
  SET r.score = l[1])
"""

# Who sent each of the ids (those stored).
MESSAGE_OWNERS: LiteralString = """
UNWIND $ids AS id
MATCH (u:User)-[:SENT]->(m:Message {id: id})
RETURN id, u.id AS user_id
"""

DELETE_USER: LiteralString = """
MATCH (u:User {id: $user_id})
OPTIONAL MATCH (u)-[:SENT]->(m:Message)
WITH u, collect(m) AS messages
FOREACH (m IN messages | DETACH DELETE m)
DETACH DELETE u
RETURN size(messages) AS messages
"""

COUNTS: LiteralString = """
UNWIND $user_ids AS id
MATCH (u:User {id: id})
RETURN count(u) AS users,
       sum(COUNT { (u)-[:SENT]->(:Message) }) AS messages,
       sum(COUNT { (u)-[:SENT]->(:Message)-[:ABOUT]->(:Campaign) }) AS about,
       sum(COUNT { (u)-[:SENT]->(:Message)-[:HAS_INTENT]->(:Intent) }) AS has_intent
"""

_COUNT_NODES: dict[str, LiteralString] = {
    "User": "MATCH (n:User) WHERE n.id IN $keys RETURN count(n) AS c",
    "Message": "MATCH (n:Message) WHERE n.id IN $keys RETURN count(n) AS c",
    "Campaign": "MATCH (n:Campaign) WHERE n.id IN $keys RETURN count(n) AS c",
    "Intent": "MATCH (n:Intent) WHERE n.name IN $keys RETURN count(n) AS c",
}
Label = Literal["User", "Message", "Campaign", "Intent"]


# A message as MERGE_MESSAGES takes it: one value per column of ``ROW``; the links are
# [campaign id, score, source] and [intent name, score].
MergeRow = tuple[str, str, int, str, str, str, str, str, list[list[Any]], list[list[Any]]]
ROW = (
    "message_id",
    "user_id",
    "ts",
    "text",
    "channel",
    "locale",
    "model",
    "campaign_id",
    "campaigns",
    "intents",
)


@dataclass(frozen=True, slots=True)
class CampaignEdge:
    campaign_id: str
    score: float
    # "event" (the producer named it) or "similarity" (embedding near the campaign's).
    source: str


@dataclass(frozen=True, slots=True)
class MessageNode:
    """One message with its user, campaign links and intents, as merged into the graph."""

    message_id: str
    user_id: str
    ts_ms: int
    text: str = ""
    channel: str = ""
    locale: str = ""
    model: str = ""
    campaign_id: str = ""
    campaigns: tuple[CampaignEdge, ...] = ()
    # (intent name, score), best first, "unknown" left out.
    intents: tuple[tuple[str, float], ...] = ()

    @classmethod
    def from_enriched(cls, enriched: events_pb2.EnrichedMessage) -> MessageNode:
        return cls.from_row(merge_row(enriched))

    @classmethod
    def from_row(cls, row: MergeRow) -> MessageNode:
        """The node of a MERGE_MESSAGES row (``row`` gives it back)."""
        message_id, user_id, ts, text, channel, locale, model, campaign_id, campaigns, intents = row
        return cls(
            message_id=message_id,
            user_id=user_id,
            ts_ms=ts,
            text=text,
            channel=channel,
            locale=locale,
            model=model,
            campaign_id=campaign_id,
            campaigns=tuple(CampaignEdge(*link) for link in campaigns),
            intents=tuple((name, score) for name, score in intents),
        )

    def row(self) -> MergeRow:
        """The node's MERGE_MESSAGES row."""
        return (
            self.message_id,
            self.user_id,
            self.ts_ms,
            self.text,
            self.channel,
            self.locale,
            self.model,
            self.campaign_id,
            [[c.campaign_id, c.score, c.source] for c in self.campaigns],
            [[name, score] for name, score in self.intents],
        )


def merge_row(enriched: events_pb2.EnrichedMessage) -> MergeRow:
    """The MERGE_MESSAGES row of an enriched message (the graph-writer's path: the protobuf
    straight to the values Bolt carries). A campaign linked twice keeps its first (best) link;
    the "unknown" intent is left out, and an intent listed twice keeps its first score."""
    message = enriched.message
    campaigns: dict[str, list[Any]] = {}
    for link in enriched.campaigns:
        campaign_id = link.campaign_id
        if campaign_id and campaign_id not in campaigns:
            campaigns[campaign_id] = [
                campaign_id,
                link.score,
                _SOURCES.get(link.source, "unspecified"),
            ]
    intents: dict[str, list[Any]] = {}
    for scored in enriched.intents:
        name = scored.intent
        if name and name != UNKNOWN_INTENT and name not in intents:
            intents[name] = [name, scored.score]
    timestamp = message.timestamp
    return (
        message.message_id,
        message.user_id,
        # Timestamp.ToMilliseconds, without its Python-level call.
        timestamp.seconds * 1000 + timestamp.nanos // 1_000_000,
        message.text,
        message.channel,
        message.locale,
        enriched.model,
        message.campaign_id,
        list(campaigns.values()),
        list(intents.values()),
    )


class _Column(list[Any]):
    """A parameter list that prints as its length. The driver formats ``repr`` of a
    statement's parameters for its debug log line before its logger drops the line: for a
    batch that cost about 2 microseconds a row, as much as packing it."""

    def __repr__(self) -> str:
        return f"<{len(self)} values>"


def seen_spans(user_ids: Iterable[str], times: Iterable[int]) -> list[dict[str, Any]]:
    """One row per user for MERGE_MESSAGES: id, earliest and latest message time (ms)."""
    spans: dict[str, list[int]] = {}
    for user, ts in zip(user_ids, times, strict=True):
        span = spans.get(user)
        if span is None:
            spans[user] = [ts, ts]
        elif ts < span[0]:
            span[0] = ts
        elif ts > span[1]:
            span[1] = ts
    return [{"id": user, "first": first, "last": last} for user, (first, last) in spans.items()]


@dataclass(frozen=True, slots=True)
class MergeBatch:
    """MERGE_MESSAGES's parameters for a batch: each message once, as its last version (within
    one statement Cypher may run every row's link cleanup before any row's link MERGE, so two
    versions of a message would keep the links of both), and each user once."""

    parameters: dict[str, Any]
    size: int

    @classmethod
    def of(cls, nodes: Iterable[MessageNode]) -> MergeBatch:
        return cls.of_rows(n.row() for n in nodes)

    @classmethod
    def of_enriched(cls, messages: Iterable[events_pb2.EnrichedMessage]) -> MergeBatch:
        return cls.of_rows(merge_row(e) for e in messages)

    @classmethod
    def of_rows(cls, rows: Iterable[MergeRow]) -> MergeBatch:
        unique = list({row[0]: row for row in rows}.values())
        if not unique:
            return cls({}, 0)
        # zip(*rows): the rows' columns (every row has one value per column).
        columns = {
            name: _Column(values)
            for name, values in zip(ROW, zip(*unique, strict=True), strict=True)
        }
        users = _Column(seen_spans(columns["user_id"], columns["ts"]))
        return cls({"users": users, **columns}, len(unique))


@dataclass(frozen=True, slots=True)
class GraphCounts:
    users: int
    messages: int
    about: int
    has_intent: int


def is_transient(exc: BaseException) -> bool:
    """True for failures that a later retry of the same idempotent write may get past."""
    if isinstance(exc, ServiceUnavailable | SessionExpired | TransientError):
        return True
    if isinstance(exc, Neo4jError | DriverError):
        return bool(exc.is_retryable())
    return isinstance(exc, ConnectionError | TimeoutError)


class GraphStore:
    """The platform's graph in Neo4j. Thread-safe (the driver pools its connections)."""

    def __init__(self, settings: Settings, driver: neo4j.Driver | None = None) -> None:
        self._cfg = settings.neo4j
        self._driver = driver if driver is not None else neo4j_driver(settings)
        self._schema_ready = False
        self.recent_owners = RecentOwners()

    def close(self) -> None:
        self._driver.close()

    def _session(self) -> neo4j.Session:
        return self._driver.session(
            database=self._cfg.database,
            max_transaction_retry_time=self._cfg.max_transaction_retry_time_s,
        )

    @contextmanager
    def _op(self, operation: str) -> Iterator[None]:
        with store_operation(STORE, operation):
            try:
                yield
            except Exception as exc:
                if is_transient(exc):
                    raise RetryableError(f"neo4j {operation}: {exc}", STORE) from exc
                raise

    def _write(self, operation: str, query: LiteralString, **params: Any) -> list[neo4j.Record]:
        def work(tx: neo4j.ManagedTransaction) -> list[neo4j.Record]:
            return list(tx.run(query, params))

        with self._op(operation), self._session() as session:
            return session.execute_write(work)

    def _read(self, operation: str, query: LiteralString, **params: Any) -> list[neo4j.Record]:
        def work(tx: neo4j.ManagedTransaction) -> list[neo4j.Record]:
            return list(tx.run(query, params))

        with self._op(operation), self._session() as session:
            return session.execute_read(work)

    def ping(self) -> str | None:
        """Readiness: None when Neo4j answers, else a short reason."""
        try:
            with self._op("ping"):
                self._driver.verify_connectivity()
        except Exception as exc:
            return f"neo4j: {exc}"
        return None

    def ensure_schema(self) -> None:
        """Uniqueness constraints on User.id, Message.id, Campaign.id, Intent.name; idempotent."""
        if self._schema_ready:
            return
        with self._op("ensure_schema"), self._session() as session:
            for statement in SCHEMA:
                try:
                    session.run(statement).consume()
                except ClientError as exc:
                    # The same rule under another name (created by hand or an older
                    # version) is as good as ours.
                    if "EquivalentSchemaRuleAlreadyExists" not in (exc.code or ""):
                        raise
        self._schema_ready = True

    def merge_messages(self, rows: Sequence[MessageNode]) -> int:
        """MERGE the batch in one statement and one transaction; idempotent. A message listed
        twice is written once, as its last version (``MergeBatch``). Returns the rows written.
        """
        return self.merge_batch(MergeBatch.of(rows))

    def merge_batch(self, batch: MergeBatch) -> int:
        """``merge_messages`` of parameters built beforehand. Returns the rows written."""
        if not batch.size:
            return 0
        self.ensure_schema()
        self._write("merge_messages", MERGE_MESSAGES, **batch.parameters)
        store_rows(STORE, "merge_messages", batch.size)
        return batch.size

    def message_owners(self, message_ids: Sequence[str]) -> dict[str, str]:
        """message_id -> user_id of those of ``message_ids`` in the graph: one query."""
        if not message_ids:
            return {}
        records = self._read("message_owners", MESSAGE_OWNERS, ids=list(message_ids))
        return {str(r["id"]): str(r["user_id"]) for r in records}

    def screen_message_ids(self, messages: Sequence[events_pb2.EnrichedMessage]) -> Conflicts:
        """The messages whose id another user's message holds, with their
        ``MESSAGE_ID_CONFLICT`` rejections (``mpp.ownership``); reads, never writes."""
        return screen_owners(messages, self.message_owners, self.recent_owners)

    def delete_user(self, user_id: str) -> int:
        """Remove the user and their messages; idempotent. Returns the messages removed."""
        self.recent_owners.forget_user(user_id)
        records = self._write("delete_user", DELETE_USER, user_id=user_id)
        if not records:
            return 0
        removed = int(records[0]["messages"])
        store_rows(STORE, "delete_user", removed)
        return removed

    # -- reads, for tests and operators ------------------------------------------------------

    def counts(self, user_ids: Sequence[str]) -> GraphCounts:
        """Users, their messages, ABOUT and HAS_INTENT relationships among ``user_ids``."""
        records = self._read("counts", COUNTS, user_ids=list(user_ids))
        record = records[0] if records else None
        return GraphCounts(
            users=int(record["users"]) if record else 0,
            messages=int(record["messages"] or 0) if record else 0,
            about=int(record["about"] or 0) if record else 0,
            has_intent=int(record["has_intent"] or 0) if record else 0,
        )

    def count_nodes(self, label: Label, keys: Sequence[str]) -> int:
        """How many ``label`` nodes exist with these ids (names for Intent)."""
        records = self._read("count_nodes", _COUNT_NODES[label], keys=list(keys))
        return int(records[0]["c"])

    def constraints(self) -> dict[str, tuple[str, str]]:
        """Uniqueness constraints by name: (label, property)."""
        records = self._read(
            "constraints",
            "SHOW CONSTRAINTS YIELD name, type, labelsOrTypes, properties "
            "WHERE type = 'UNIQUENESS' RETURN name, labelsOrTypes, properties",
        )
        return {
            r["name"]: (r["labelsOrTypes"][0], r["properties"][0])
            for r in records
            if r["labelsOrTypes"] and r["properties"]
        }
