"""Pure ranking logic: the user vector, blending the sources, the business rules.

No I/O here, so that every rule is unit-tested without a server.

- ``user_vector``: the recency-weighted mean of a user's message vectors. A message's weight
  halves every ``half_life_s`` before the user's newest message (not before now: a replay of old
  conversations weighs them as they were spoken). The result is unit-normalized.
- ``blend``: each source's scores are divided by that source's best score (negative scores
  count as 0), multiplied by the source's weight and summed per campaign; every contributing
  source's reasons are kept, best first.
- ``apply_rules``: only live campaigns of the catalog; never one the user converted on or
  dismissed; none whose daily frequency cap the user has reached today.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from numpy.typing import NDArray

from mpp.catalog import targets


@dataclass(frozen=True, slots=True)
class Reason:
    """Why an item is recommended (mpp.v1.Reason)."""

    source: str
    kind: str
    detail: str
    score: float
    intent: str = ""
    message_id: str = ""


@dataclass(slots=True)
class Candidate:
    """A campaign proposed by one source, with that source's own score scale."""

    campaign_id: str
    score: float
    reasons: list[Reason] = field(default_factory=list)


@dataclass(slots=True)
class Ranked:
    campaign_id: str
    score: float
    reasons: list[Reason]


@dataclass(frozen=True, slots=True)
class CampaignInfo:
    """What the rules need of a catalog campaign (PostgreSQL ``campaigns``)."""

    campaign_id: str
    name: str
    active: bool = True
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    intents: tuple[str, ...] = ()
    daily_frequency_cap: int = 0
    # Targeting (mpp.catalog.targets): empty means any channel or locale.
    channels: tuple[str, ...] = ()
    locales: tuple[str, ...] = ()

    def shown_on(self, channel: str, locale: str) -> bool:
        return targets(self.channels, self.locales, channel, locale)

    def is_live(self, now: datetime) -> bool:
        return (
            self.active
            and (self.starts_at is None or self.starts_at <= now)
            and (self.ends_at is None or now < self.ends_at)
        )


@dataclass(frozen=True, slots=True)
class UserRules:
    """The user's state that the rules read: exclusions and today's impressions."""

    # campaign_id -> "conversion" or "dismissal"
    excluded: Mapping[str, str] = field(default_factory=dict)
    # campaign_id -> impressions reported today (UTC day)
    shown_today: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TimedVector:
    ts_ms: int
    embedding: Sequence[float] | NDArray[np.float32]


def user_vector(vectors: Sequence[TimedVector], half_life_s: float) -> NDArray[np.float32] | None:
    """Recency-weighted mean of ``vectors``, unit-normalized; None when there are none."""
    if not vectors:
        return None
    matrix = np.asarray([v.embedding for v in vectors], dtype=np.float32)
    times = np.asarray([v.ts_ms for v in vectors], dtype=np.float64)
    age_s = (times.max() - times) / 1000.0
    weights = np.power(0.5, age_s / half_life_s)
    mean = (weights[:, None] * matrix).sum(axis=0) / weights.sum()
    norm = float(np.linalg.norm(mean))
    if norm == 0.0 or not np.isfinite(norm):
        return None
    result: NDArray[np.float32] = (mean / norm).astype(np.float32)
    return result


def blend(sources: Mapping[str, Iterable[Candidate]], weights: Mapping[str, float]) -> list[Ranked]:
    """Blend per-source candidates into one ranking, best first (ties by campaign_id)."""
    totals: dict[str, Ranked] = {}
    for source, candidates in sources.items():
        listed = list(candidates)
        weight = weights.get(source, 0.0)
        best = max((c.score for c in listed), default=0.0)
        for candidate in listed:
            normalized = max(candidate.score, 0.0) / best if best > 0 else 0.0
            ranked = totals.get(candidate.campaign_id)
            if ranked is None:
                ranked = totals[candidate.campaign_id] = Ranked(candidate.campaign_id, 0.0, [])
            ranked.score += weight * normalized
            ranked.reasons.extend(candidate.reasons)
    for ranked in totals.values():
        ranked.reasons.sort(key=lambda r: -r.score)
    return sorted(totals.values(), key=lambda r: (-r.score, r.campaign_id))


def apply_rules(
    ranked: Iterable[Ranked],
    catalog: Mapping[str, CampaignInfo],
    rules: UserRules,
    now: datetime,
    channel: str = "",
    locale: str = "",
) -> list[Ranked]:
    """Drop what the business rules forbid (not live, not targeted at the request's channel
    and locale, converted or dismissed, capped for today); the order is kept."""
    kept = []
    for item in ranked:
        campaign = catalog.get(item.campaign_id)
        if campaign is None or not campaign.is_live(now):
            continue
        if not campaign.shown_on(channel, locale):
            continue
        if item.campaign_id in rules.excluded:
            continue
        cap = campaign.daily_frequency_cap
        if cap > 0 and rules.shown_today.get(item.campaign_id, 0) >= cap:
            continue
        kept.append(item)
    return kept
