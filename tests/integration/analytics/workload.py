"""The analytics tests' input and its expected output, shared by the analytics tests here,
tests/e2e/test_analytics.py and tests/batch/test_aggregate_job.py: a workload of facts with
replays and erasures (``workload``), the aggregates recomputed from it in plain Python
(``recompute``), and ways to write it to PostgreSQL (``write``) or send it to the topics
(``as_records``, ``produce``)."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from mpp_analytics import records

from mpp import analytics
from mpp.analytics import FeedbackFact, MessageFact
from mpp.config import Settings
from mpp.kafka import TrackedProducer
from mpp.v1 import events_pb2 as E
from mpp.v1 import feedback_pb2 as F

KINDS = {
    "impression": F.FEEDBACK_TYPE_IMPRESSION,
    "click": F.FEEDBACK_TYPE_CLICK,
    "conversion": F.FEEDBACK_TYPE_CONVERSION,
    "dismissal": F.FEEDBACK_TYPE_DISMISSAL,
}
START = datetime(2026, 11, 20, 22, 0, tzinfo=UTC)


@dataclass
class Workload:
    """Facts in arrival order, with replays, and the users erased along the way."""

    # ("message", MessageFact) | ("feedback", FeedbackFact) | ("erase", user_id)
    events: list[tuple[str, Any]] = field(default_factory=list)

    def batches(self, size: int) -> list[list[tuple[str, Any]]]:
        return [self.events[i : i + size] for i in range(0, len(self.events), size)]

    def final_facts(self) -> tuple[dict[str, MessageFact], dict[str, FeedbackFact]]:
        """What the fact tables must hold: the last version of each message and the first of
        each feedback event, minus erased users' facts read before their erasure."""
        messages: dict[str, MessageFact] = {}
        feedback: dict[str, FeedbackFact] = {}
        for kind, item in self.events:
            if kind == "message":
                messages[item.message_id] = item
            elif kind == "feedback":
                feedback.setdefault(item.feedback_id, item)
            else:
                messages = {k: v for k, v in messages.items() if v.user_id != item}
                feedback = {k: v for k, v in feedback.items() if v.user_id != item}
        return messages, feedback


def workload(tag: str, messages: int = 400, seed: int = 7, erase: int = 2) -> Workload:
    """Messages of 12 users over 4 UTC days (crossing midnight) on 3 channels, about 5
    campaigns, feedback of every kind, 10% replays (some with other intents: the last version
    must win) and ``erase`` erasures in the middle."""
    rng = random.Random(seed)
    users = [f"{tag}-u{i}" for i in range(12)]
    campaigns = [f"{tag}-c{i}" for i in range(5)]
    intents = ["billing", "refund", "travel", "upgrade", "greeting"]
    channels = ["chat", "email", ""]
    work = Workload()
    sent: list[Any] = []
    for i in range(messages):
        at = START + timedelta(minutes=13 * i + rng.randint(0, 12))
        fact = MessageFact(
            message_id=f"{tag}-m{i}",
            user_id=rng.choice(users),
            occurred_at=at,
            channel=rng.choice(channels),
            intents=tuple(rng.sample(intents, rng.randint(0, 3))),
            campaign_ids=tuple(rng.sample(campaigns, rng.choice([0, 0, 1, 1, 2]))),
        )
        work.events.append(("message", fact))
        sent.append(("message", fact))
        if fact.campaign_ids or rng.random() < 0.3:
            campaign = fact.campaign_ids[0] if fact.campaign_ids else rng.choice(campaigns)
            for j, kind in enumerate(("impression", "click", "conversion", "dismissal")):
                if rng.random() < (0.9, 0.35, 0.4, 0.1)[j]:
                    event = FeedbackFact(
                        feedback_id=f"{tag}-f{i}-{kind}",
                        user_id=fact.user_id,
                        campaign_id=campaign,
                        kind=kind,
                        occurred_at=at + timedelta(seconds=30 + j),
                        channel=rng.choice(channels),
                        recommendation_id=f"{tag}-r{i}",
                    )
                    work.events.append(("feedback", event))
                    sent.append(("feedback", event))
        if rng.random() < 0.1 and sent:
            kind, old = rng.choice(sent)
            if kind == "message":
                # Same id, other content: a replay after re-enrichment; the last one counts.
                old = MessageFact(
                    old.message_id, old.user_id, old.occurred_at, old.channel, ("refund",), ()
                )
            work.events.append((kind, old))
        if erase and i in {messages // 3, 2 * messages // 3}:
            work.events.append(("erase", users[len([e for e in work.events if e[0] == "erase"])]))
    return work


def recompute(
    messages: dict[str, MessageFact], feedback: dict[str, FeedbackFact]
) -> dict[str, list[dict[str, Any]]]:
    """The four aggregates, recomputed in plain Python from the facts."""
    users: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"messages": 0, "times": [], "days": set(), "intents": Counter(), "c": set()}
    )
    daily: dict[tuple[str, Any], Counter[str]] = defaultdict(Counter)
    activity: dict[tuple[Any, str], dict[str, Any]] = defaultdict(
        lambda: {"messages": 0, "users": set()}
    )
    for m in messages.values():
        u = users[m.user_id]
        u["messages"] += 1
        u["times"].append(m.occurred_at)
        u["days"].add(m.day)
        u["intents"].update(m.intents)
        u["c"].update(m.campaign_ids)
        for c in m.campaign_ids:
            daily[(c, m.day)]["messages"] += 1
        activity[(m.day, m.channel)]["messages"] += 1
        activity[(m.day, m.channel)]["users"].add(m.user_id)
    for f in feedback.values():
        u = users[f.user_id]
        u["times"].append(f.occurred_at)
        u["days"].add(f.day)
        if f.kind in ("click", "conversion"):
            u["c"].add(f.campaign_id)
        daily[(f.campaign_id, f.day)][f.kind + "s"] += 1
        activity[(f.day, f.channel)]["users"].add(f.user_id)
    engagement = [
        {
            "user_id": user_id,
            "messages": u["messages"],
            "active_days": len(u["days"]),
            "first_seen": min(u["times"]),
            "last_seen": max(u["times"]),
            "top_intents": [
                i for i, _ in sorted(u["intents"].items(), key=lambda x: (-x[1], x[0]))
            ][:5],
            "campaigns_engaged": sorted(u["c"]),
        }
        for user_id, u in sorted(users.items())
    ]
    counts = ("messages", "impressions", "clicks", "conversions", "dismissals")
    per_day = [
        {"campaign_id": c, "day": d, **{k: n[k] for k in counts}}
        for (c, d), n in sorted(daily.items())
    ]
    totals: dict[str, Counter[str]] = defaultdict(Counter)
    for (c, _), n in daily.items():
        totals[c].update({k: n[k] for k in counts})
    performance = [
        {
            "campaign_id": c,
            **{k: n[k] for k in counts},
            "ctr": n["clicks"] / n["impressions"] if n["impressions"] else 0.0,
            "conversion_rate": n["conversions"] / n["clicks"] if n["clicks"] else 0.0,
        }
        for c, n in sorted(totals.items())
    ]
    days = [
        {"day": d, "channel": ch, "messages": a["messages"], "active_users": len(a["users"])}
        for (d, ch), a in sorted(activity.items())
    ]
    return {
        "user_engagement": engagement,
        "campaign_performance_daily": per_day,
        "campaign_performance": performance,
        "daily_activity": days,
    }


def aggregates(conn: psycopg.Connection[Any]) -> dict[str, list[dict[str, Any]]]:
    return {t: analytics.read_table(conn, t) for t in analytics.AGGREGATE_TABLES}


def write(conn: psycopg.Connection[Any], batch: list[tuple[str, Any]]) -> None:
    """One batch as the service writes it (erasures first, then the facts read after them)."""
    plan = records.Batch()
    for kind, item in batch:
        if kind == "message":
            plan.messages.pop(item.message_id, None)
            plan.messages[item.message_id] = item
        elif kind == "feedback":
            plan.feedback.setdefault(item.feedback_id, item)
        else:
            plan.erase(item, "request", datetime.now(UTC))
    analytics.write_batch(
        conn, list(plan.messages.values()), list(plan.feedback.values()), list(plan.erasures)
    )


def as_records(tag: str, work: Workload) -> list[tuple[str, bytes]]:
    """The workload as (topic kind, protobuf bytes), as producers would send it."""
    out: list[tuple[str, bytes]] = []
    for kind, item in work.events:
        if kind == "message":
            message = E.ValidatedMessage(
                message_id=item.message_id,
                user_id=item.user_id,
                text="text",
                channel=item.channel,
            )
            message.timestamp.FromDatetime(item.occurred_at)
            enriched = E.EnrichedMessage(
                message=message,
                # "unknown" (below the intent threshold) is no intent: analytics drops it.
                intents=[E.IntentScore(intent=i, score=0.5) for i in item.intents]
                + [E.IntentScore(intent="unknown", score=0.1)],
                campaigns=[E.CampaignLink(campaign_id=c, score=0.5) for c in item.campaign_ids],
            )
            out.append(("enriched", enriched.SerializeToString()))
        elif kind == "feedback":
            event = F.FeedbackEvent(
                feedback_id=item.feedback_id,
                user_id=item.user_id,
                campaign_id=item.campaign_id,
                type=KINDS[item.kind],
                recommendation_id=item.recommendation_id,
                channel=item.channel,
            )
            event.timestamp.FromDatetime(item.occurred_at)
            out.append(("feedback", event.SerializeToString()))
        else:
            out.append(
                ("erasure", F.ErasureRequest(user_id=item, request_id="r").SerializeToString())
            )
    return out


def produce(settings: Settings, records: list[tuple[str, bytes]], key: str = "k") -> None:
    topics = settings.kafka.topics
    names = {"enriched": topics.enriched, "feedback": topics.feedback, "erasure": topics.erasure}
    producer = TrackedProducer(settings.kafka, service="test")
    for kind, value in records:
        # One key: the order across the three topics is not kept by Kafka anyway; the test's
        # erasures come after everything they must remove (see ``ordered``).
        producer.produce(names[kind], value, key=key)
    producer.flush()
