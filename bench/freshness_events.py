"""The inputs of bench/freshness.py: users who talked about one campaign's topic three days
ago, and for each a new message about another campaign's topic; what is seen of each event."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

DAY_MS = 86_400_000
HISTORY = 4
# Sentences written for this bench, by the campaign whose topic they are about.
TOPICS: dict[str, list[str]] = {
    "travel-summer": [
        "we are booking flights and a hotel by the sea for our vacation abroad",
        "the plane to Barcelona leaves at dawn, my suitcase is packed",
        "I want a cheap beach holiday somewhere warm this summer",
    ],
    "food-delivery": [
        "let's order pizza and sushi delivered for dinner tonight",
        "the burger place downtown delivers in twenty minutes",
        "I'm too tired to cook, ordering takeout from the Thai restaurant",
    ],
    "fitness-app": [
        "I go running every morning and lift weights at the gym at night",
        "my yoga teacher gave me a new workout plan to stay healthy",
        "I've lost five kilos since I started training with a coach",
    ],
    "concert-tickets": [
        "I got tickets to see my favourite band live at the festival",
        "the concert last night was loud and amazing, the singer was great",
        "the presale for their world tour starts tomorrow at ten",
    ],
    "pet-supplies": [
        "my dog needs a vet visit and new chew toys",
        "our cat only eats the expensive salmon food now",
        "the puppy chewed my shoes again, he needs more toys",
    ],
    "job-board": [
        "I have a job interview tomorrow and I'm polishing my resume",
        "I'm looking for a new job, my career here is going nowhere",
        "they offered me an internship at the software company",
    ],
    "card-rewards": [
        "my credit card charges a fee on every purchase abroad",
        "I want a bank card that gives cashback on groceries and shopping",
        "the bank raised the interest on my card balance again",
    ],
    "student-laptop": [
        "I need a new laptop for my college classes and homework",
        "finals are next week and my old computer keeps crashing",
        "the university bookstore has discounts for students on notebooks",
    ],
}
CAMPAIGNS = list(TOPICS)


@dataclass
class Event:
    """One user's new message and what was seen of it, in seconds from its produce call."""

    user_id: str
    history: str
    topic: str
    message_id: str
    text: str
    before: list[str] = field(default_factory=list)
    enriched_s: float | None = None
    dropped_s: float | None = None
    changed_s: float | None = None
    after: list[str] = field(default_factory=list)
    names_message: bool = False
    degraded_polls: int = 0
    polls: int = 0
    milvus_s: float | None = None
    neo4j_s: float | None = None

    @property
    def stores_s(self) -> float | None:
        """When both stores held the message."""
        if self.milvus_s is None or self.neo4j_s is None:
            return None
        return max(self.milvus_s, self.neo4j_s)


def plan(run: str, n: int) -> list[Event]:
    """User i talked about campaign i's topic; its new message is about another one."""
    events = []
    for i in range(n):
        past = CAMPAIGNS[i % len(CAMPAIGNS)]
        topic = CAMPAIGNS[(i + 1 + i // len(CAMPAIGNS)) % len(CAMPAIGNS)]
        if topic == past:
            topic = CAMPAIGNS[(i + 1) % len(CAMPAIGNS)]
        user = f"{run}-u{i}"
        text = TOPICS[topic][i % len(TOPICS[topic])]
        events.append(Event(user, past, topic, f"{user}-new", text))
    return events


def raw(user: str, text: str, ts_ms: int, message_id: str) -> bytes:
    body = {"user_id": user, "message": text, "timestamp": ts_ms, "message_id": message_id}
    return json.dumps(body).encode()


def history(events: list[Event]) -> tuple[list[bytes], list[bytes | None]]:
    """Each user's past messages, three days old, about the user's first topic."""
    old = int(time.time() * 1000) - 3 * DAY_MS
    records: list[bytes] = []
    keys: list[bytes | None] = []
    for i, e in enumerate(events):
        texts = TOPICS[e.history]
        for j in range(HISTORY):
            text = texts[(i + j) % len(texts)]
            records.append(raw(e.user_id, text, old + j * 60_000, f"{e.user_id}-h{j}"))
            keys.append(e.user_id.encode())
    return records, keys
