"""The poison records of test_poison.py: each kind of record a consumer cannot process, on each
topic it can reach (raw, validated, enriched, feedback, erasure), with the code and field of the
dead letter each service that reads it must write; and the builders of valid events (feedback)
the test produces beside them."""

from __future__ import annotations

import random
import string
import time
from dataclasses import dataclass
from typing import Any

from mpp.v1 import events_pb2 as E
from mpp.v1 import feedback_pb2 as F

WRITERS = ("vector-writer", "graph-writer", "analytics")
NOW_MS = int(time.time() * 1000)
NOW_S = NOW_MS // 1000
YEAR_9999_S = 253_402_300_799
YEAR_1_S = -62_135_596_800


@dataclass(frozen=True)
class Poison:
    kind: str
    topic: str  # a Topics field name
    value: bytes
    # service -> (code name without ERROR_CODE_, field)
    expected: dict[str, tuple[str, str]]


def noise(n: int, seed: int) -> str:
    """Text that does not compress (a long run of one character would pass an index)."""
    rng = random.Random(seed)
    return "".join(rng.choices(string.ascii_letters + string.digits, k=n))


def validated(user: str, text: str = "hello", seconds: int = NOW_S) -> E.ValidatedMessage:
    message = E.ValidatedMessage(message_id=f"{user}-m", user_id=user, text=text, channel="chat")
    message.timestamp.seconds = seconds
    return message


def enriched(
    user: str, dim: int = 384, seconds: int = NOW_S, campaign: str = ""
) -> E.EnrichedMessage:
    out = E.EnrichedMessage(message=validated(user, seconds=seconds), model="m", dimension=dim)
    out.embedding.extend([1.0 / dim**0.5] * dim)
    out.intents.append(E.IntentScore(intent="unknown", score=0.1))
    if campaign:
        out.campaigns.append(E.CampaignLink(campaign_id=campaign, score=0.5))
    return out


def feedback(user: str, i: int, **kw: Any) -> F.FeedbackEvent:
    event = F.FeedbackEvent(
        feedback_id=f"{user}-f{i}",
        user_id=user,
        campaign_id="travel-summer",
        type=F.FEEDBACK_TYPE_CLICK,
        channel="web",
    )
    event.timestamp.seconds = NOW_S - 60
    for name, value in kw.items():
        setattr(event, name, value)
    return event


def erasure(user: str, seconds: int | None = None) -> bytes:
    request = F.ErasureRequest(user_id=user, request_id=f"r-{user}")
    if seconds is not None:
        request.requested_at.seconds = seconds
    return request.SerializeToString()


def poisons(unique: str) -> list[Poison]:
    p = f"poison-{unique}"
    writers_all = dict.fromkeys(WRITERS)

    def each(code: str, field: str, services: Any = writers_all) -> dict[str, tuple[str, str]]:
        return {s: (code, field) for s in services}

    nan = enriched(f"{p}-nan")
    nan.embedding[3] = float("nan")
    # As large as Kafka takes (librdkafka's 1,000,000 bytes, less a record's own overhead): a
    # dead letter holding it whole would not fit.
    head = b'{"user_id": "%s-big", "timestamp": %d, "message": "' % (p.encode(), NOW_MS)
    oversized = head + noise(999_900 - len(head) - 2, 1).encode() + b'"}'
    nested = b'{"user_id": "u", "metadata": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    return [
        # conversations.raw: ingest
        Poison("undecodable", "raw", b'{"user_id": "u", "mess', {"ingest": ("UNDECODABLE", "")}),
        Poison("nested", "raw", nested, {"ingest": ("UNDECODABLE", "")}),
        Poison(
            "year 1",
            "raw",
            b'{"user_id": "%s-y1", "message": "hi", "timestamp": "0001-01-01T00:00:00Z"}'
            % p.encode(),
            {"ingest": ("TIMESTAMP_INVALID", "timestamp")},
        ),
        Poison(
            "year 9999",
            "raw",
            b'{"user_id": "%s-y9", "message": "hi", "timestamp": "9999-12-31T23:59:59-05:00"}'
            % p.encode(),
            {"ingest": ("TIMESTAMP_INVALID", "timestamp")},
        ),
        Poison("oversized", "raw", oversized, {"ingest": ("MESSAGE_TOO_LONG", "message")}),
        Poison(
            "bad id",
            "raw",
            b'{"user_id": "bad user", "message": "hi", "timestamp": %d}' % NOW_MS,
            {"ingest": ("USER_ID_INVALID", "user_id")},
        ),
        Poison(
            "missing field",
            "raw",
            b'{"message": "hi", "timestamp": %d}' % NOW_MS,
            {"ingest": ("USER_ID_MISSING", "user_id")},
        ),
        # conversations.validated: the embedder
        Poison("undecodable", "validated", b"\xff\xfe\x00 junk", {"embedder": ("UNDECODABLE", "")}),
        Poison(
            "missing field",
            "validated",
            E.ValidatedMessage(text="hi").SerializeToString(),
            {"embedder": ("SCHEMA_INVALID", "message_id")},
        ),
        Poison(
            "bad id",
            "validated",
            validated("bad user").SerializeToString(),
            {"embedder": ("USER_ID_INVALID", "user_id")},
        ),
        Poison(
            "year 9999",
            "validated",
            validated(f"{p}-y9v", seconds=YEAR_9999_S + 10).SerializeToString(),
            {"embedder": ("TIMESTAMP_INVALID", "timestamp")},
        ),
        Poison(
            "too long",
            "validated",
            validated(f"{p}-long", text="x" * 5000).SerializeToString(),
            {"embedder": ("MESSAGE_TOO_LONG", "text")},
        ),
        # conversations.enriched: the vector-writer, the graph-writer, analytics
        Poison("undecodable", "enriched", b"\xff\xfe\x00 junk", each("UNDECODABLE", "")),
        Poison(
            "wrong dimension",
            "enriched",
            enriched(f"{p}-dim", dim=385).SerializeToString(),
            {"vector-writer": ("FIELD_INVALID", "embedding")},
        ),
        Poison(
            "nan",
            "enriched",
            nan.SerializeToString(),
            {"vector-writer": ("FIELD_INVALID", "embedding")},
        ),
        Poison(
            "year 9999",
            "enriched",
            enriched(f"{p}-y9e", seconds=YEAR_9999_S + 10).SerializeToString(),
            each("TIMESTAMP_INVALID", "message.timestamp"),
        ),
        Poison(
            "bad id",
            "enriched",
            enriched("bad user").SerializeToString(),
            {
                "vector-writer": ("USER_ID_INVALID", "message.user_id"),
                "graph-writer": ("USER_ID_INVALID", "message.user_id"),
                "analytics": ("USER_ID_INVALID", "user_id"),
            },
        ),
        Poison(
            "huge key",
            "enriched",
            enriched(f"{p}-key", campaign=noise(5000, 2)).SerializeToString(),
            {
                "graph-writer": ("FIELD_INVALID", "campaigns"),
                "analytics": ("FIELD_INVALID", "campaigns"),
            },
        ),
        # users.erasure: the writers and analytics
        Poison(
            "year 1",
            "erasure",
            erasure(f"{p}-e1", YEAR_1_S),
            each("TIMESTAMP_INVALID", "requested_at"),
        ),
        Poison(
            "year 9999",
            "erasure",
            erasure(f"{p}-e9", YEAR_9999_S + 10),
            each("TIMESTAMP_INVALID", "requested_at"),
        ),
        Poison("undecodable", "erasure", b"\xff\xfe\x00 junk", each("UNDECODABLE", "")),
        Poison("missing field", "erasure", erasure(""), each("USER_ID_MISSING", "user_id")),
        # feedback.events: analytics
        Poison("undecodable", "feedback", b"\xff\xfe\x00", {"analytics": ("UNDECODABLE", "")}),
        Poison(
            "bad value",
            "feedback",
            feedback(f"{p}-fb", 1, type=99).SerializeToString(),
            {"analytics": ("FIELD_INVALID", "type")},
        ),
        Poison(
            "year 9999",
            "feedback",
            _far_feedback(f"{p}-fb"),
            {"analytics": ("TIMESTAMP_INVALID", "timestamp")},
        ),
        Poison(
            "bad id",
            "feedback",
            feedback("bad user", 3).SerializeToString(),
            {"analytics": ("USER_ID_INVALID", "user_id")},
        ),
        Poison(
            "missing field",
            "feedback",
            feedback(f"{p}-fb", 4, feedback_id="").SerializeToString(),
            {"analytics": ("SCHEMA_INVALID", "feedback_id")},
        ),
        Poison(
            "oversized",
            "feedback",
            feedback(f"{p}-fb", 5, recommendation_id=noise(999_000, 3)).SerializeToString(),
            {"analytics": ("FIELD_INVALID", "recommendation_id")},
        ),
    ]


def _far_feedback(user: str) -> bytes:
    event = feedback(user, 2)
    event.timestamp.seconds = YEAR_9999_S + 10
    return event.SerializeToString()
