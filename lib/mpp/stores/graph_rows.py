"""The graph store's rows: messages as MERGE_MESSAGES takes them, and what its reads return.

Plain values, without the driver: times are epoch milliseconds, UTC; scores are floats,
higher is better. ``merge_row`` is the graph-writer's path from an ``EnrichedMessage``
straight to the values Bolt carries; ``MessageNode`` is the same row as a readable record.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mpp.v1 import events_pb2

UNKNOWN_INTENT = "unknown"

_SOURCES = {
    events_pb2.CAMPAIGN_LINK_SOURCE_EVENT: "event",
    events_pb2.CAMPAIGN_LINK_SOURCE_SIMILARITY: "similarity",
}

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


@dataclass(frozen=True, slots=True)
class UserMessage:
    """One of a user's messages as the recommender reads it: its intents and campaigns as
    (name or campaign id, score) pairs."""

    message_id: str
    ts_ms: int
    intents: tuple[tuple[str, float], ...] = ()
    campaigns: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class PeerCampaigns:
    """A campaign that users sharing a user's interests talked about."""

    campaign_id: str
    # How many of those users.
    peers: int
    # An intent name or campaign id that the user shares with them, "" when unknown.
    via: str


@dataclass(frozen=True, slots=True)
class UserGraph:
    """What the recommender reads of a user in one round trip: the user's recent messages,
    and the campaigns of users who share their interests, the most talked about first."""

    messages: tuple[UserMessage, ...] = ()
    peers: tuple[PeerCampaigns, ...] = ()
