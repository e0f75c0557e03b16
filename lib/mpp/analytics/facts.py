"""The analytics facts: what an event contributes to the analytics, pure domain (no I/O).

A message (``mpp.v1.EnrichedMessage``) is a ``MessageFact`` keyed by its message_id, a
feedback event (``mpp.v1.FeedbackEvent``) a ``FeedbackFact`` keyed by its feedback_id. The
serving aggregates are functions of the facts alone, defined here and computed by the
PostgreSQL store (``mpp.analytics.aggregates``) and the Spark job (``mpp_jobs.aggregate``):

- ``user_engagement``: per user with any fact; ``messages`` counts messages, ``active_days``
  the UTC days with a message or feedback, ``first_seen``/``last_seen`` span both,
  ``top_intents`` the ``TOP_INTENTS`` most frequent intents of the user's messages (ties by
  name; ``unknown`` is never one), ``campaigns_engaged`` the campaigns of the user's messages,
  clicks and conversions (``ENGAGING_KINDS``; sorted).
- ``campaign_performance_daily``: per (campaign, UTC day): messages about it and feedback
  counts by kind; a pair without any fact has no row.
- ``campaign_performance``: the same summed over days, with ``ctr = clicks / impressions`` and
  ``conversion_rate = conversions / clicks`` (0 when the denominator is 0).
- ``daily_activity``: per (UTC day, channel): messages, and ``active_users`` the distinct users
  with a message or feedback that day on that channel.

So a fact contributes to the keys ``Touched`` collects: its user, its (day, channel), and
its campaigns on its day. Times are aware UTC datetimes; ``day`` is the UTC date of
``occurred_at``. The tables' columns are ``mpp.warehouse.tables``'.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from mpp.v1 import events_pb2, feedback_pb2

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
    """One message: who, when (aware), on which channel, its intents (best first, no
    ``unknown``) and the campaigns it is about, each once."""

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
    """One feedback event on a campaign: its ``kind`` is one of ``FEEDBACK_KINDS``' names."""

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


@dataclass
class Touched:
    """The aggregate keys whose facts changed: what a written, replaced or deleted fact
    contributes to (its user, its (UTC day, channel), its campaigns on its day)."""

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
