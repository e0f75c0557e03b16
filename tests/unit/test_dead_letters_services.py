"""Each service's handler routes the poison records it knows to the DLQ with their reason.

Regression tests of #14: on the code before it, a wrong-dimension embedding reached Milvus'
upsert (a ValueError or DimensionMismatchError that stopped the vector-writer), a campaign id
of kilobytes reached Neo4j's index, a channel of kilobytes PostgreSQL's, and the dead letter of
an event near Kafka's size limit was itself over the limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import Message
from mpp_analytics import service as analytics_service
from mpp_embedder import service as embedder_service
from mpp_graph_writer import service as graph_service
from mpp_ingest import service as ingest_service
from mpp_vector_writer import service as vector_service

from mpp import writers
from mpp.codecs import Rejection
from mpp.config import Settings, Topics
from mpp.v1 import events_pb2 as E
from mpp.v1 import feedback_pb2 as F

ENRICHED, ERASURE, FEEDBACK = "enriched", "erasure", "feedback"


def settings(**kafka: Any) -> Settings:
    topics = Topics(
        raw="raw", validated="validated", enriched=ENRICHED, feedback=FEEDBACK, erasure=ERASURE
    )
    topics = topics.model_copy(update={"dlq": "dlq"})
    base = Settings()
    return base.model_copy(
        update={"kafka": base.kafka.model_copy(update={"topics": topics, **kafka})}
    )


class ListSink:
    def __init__(self) -> None:
        self.records: list[tuple[str, bytes, bytes | str | None]] = []

    def produce(self, topic: str, value: bytes, key: bytes | str | None = None) -> None:
        self.records.append((topic, value, key))

    def dead(self) -> list[tuple[int, str, str]]:
        """(offset, code name, field) of each dead letter."""
        out = []
        for topic, value, _ in self.records:
            if topic == "dlq":
                d = E.DeadLetter.FromString(value)
                out.append((d.source.offset, E.ErrorCode.Name(d.code), d.field))
        return out


def enriched(
    message_id: str = "m1",
    user_id: str = "u1",
    dim: int = 4,
    campaign: str = "",
    channel: str = "chat",
    intent: str = "billing",
    values: Sequence[float] | None = None,
) -> bytes:
    message = E.ValidatedMessage(
        message_id=message_id, user_id=user_id, text="hi", channel=channel, locale="en"
    )
    message.timestamp.FromMilliseconds(1_780_000_000_123)
    out = E.EnrichedMessage(
        message=message,
        embedding=list(values) if values is not None else [0.5] * dim,
        model="m",
        intents=[E.IntentScore(intent=intent, score=0.9)],
    )
    if campaign:
        out.campaigns.append(E.CampaignLink(campaign_id=campaign, score=0.5))
    return out.SerializeToString()


def batch(*items: tuple[str, bytes]) -> list[Message]:
    return [
        Message(topic=t, partition=0, offset=i, key=b"k", value=v) for i, (t, v) in enumerate(items)
    ]


class FakeMilvus:
    """The vector-writer's view of the store: the collection's dimension, None before it."""

    def __init__(self, dimension: int | None) -> None:
        self.dimension = dimension
        self.messages = type("C", (), {"name": "messages"})()

    def collection_dimension(self) -> int | None:
        return self.dimension


def vector_handler(dimension: int | None, sink: ListSink) -> writers.WriterHandler[Any]:
    screen = vector_service.dimension_screen(FakeMilvus(dimension))  # type: ignore[arg-type]
    writer = writers.StoreWriter(vector_service.rows, lambda rows: None, screen)
    return writers.WriterHandler(
        settings(), "vector-writer", sink, vector_service.check_enriched, writer, lambda u: 0
    )


def test_an_embedding_of_another_dimension_than_the_collections_is_dead_lettered() -> None:
    sink = ListSink()
    handler = vector_handler(4, sink)
    prepared = handler.prepare(
        batch(
            (ENRICHED, enriched("m1", dim=4)),
            (ENRICHED, enriched("m2", dim=5)),
            (ENRICHED, enriched("m3", dim=4)),
        )
    )
    assert [r.message_id for r in prepared.rows or []] == ["m1", "m3"]
    assert sink.dead() == [(1, "ERROR_CODE_FIELD_INVALID", "embedding")]
    detail = E.DeadLetter.FromString(sink.records[0][1]).detail
    assert "5 values" in detail and "holds 4-dimensional" in detail


def test_before_the_collection_exists_the_batchs_usual_dimension_wins() -> None:
    sink = ListSink()
    prepared = vector_handler(None, sink).prepare(
        batch(
            (ENRICHED, enriched("m1", dim=3)),
            (ENRICHED, enriched("m2", dim=4)),
            (ENRICHED, enriched("m3", dim=4)),
        )
    )
    assert [r.message_id for r in prepared.rows or []] == ["m2", "m3"]
    assert sink.dead() == [(0, "ERROR_CODE_FIELD_INVALID", "embedding")]


@pytest.mark.parametrize(
    ("record", "field"),
    [
        (enriched(values=[0.5, float("nan"), 0.5, 0.5]), "embedding"),
        (enriched(values=[0.5, float("inf"), float("-inf"), 0.5]), "embedding"),
        (enriched(channel="c" * 65), "message.channel"),
        (enriched(intent="i" * 300), "intents"),
    ],
)
def test_values_milvus_would_refuse_are_dead_lettered(record: bytes, field: str) -> None:
    sink = ListSink()
    prepared = vector_handler(4, sink).prepare(
        batch((ENRICHED, enriched("ok")), (ENRICHED, record))
    )
    assert [r.message_id for r in prepared.rows or []] == ["ok"]
    assert sink.dead() == [(1, "ERROR_CODE_FIELD_INVALID", field)]


@pytest.mark.parametrize("service", [vector_service, graph_service])
@pytest.mark.parametrize(
    ("record", "code", "field"),
    [
        (enriched(user_id="bad user"), "ERROR_CODE_USER_ID_INVALID", "message.user_id"),
        (enriched(user_id="u1\n"), "ERROR_CODE_USER_ID_INVALID", "message.user_id"),
        (enriched(message_id="a/b"), "ERROR_CODE_SCHEMA_INVALID", "message.message_id"),
    ],
)
def test_ids_that_ingest_would_refuse_are_dead_lettered(
    service: Any, record: bytes, code: str, field: str
) -> None:
    plan = service.plan_batch(batch((ENRICHED, record)), ENRICHED, ERASURE)
    assert [(E.ErrorCode.Name(r.code), r.field) for _, r in plan.rejected] == [(code, field)]


@pytest.mark.parametrize(
    ("record", "field"),
    [(enriched(campaign="c" * 5000), "campaigns"), (enriched(intent="i" * 5000), "intents")],
)
def test_keys_too_long_for_a_neo4j_index_are_dead_lettered(record: bytes, field: str) -> None:
    plan = graph_service.plan_batch(batch((ENRICHED, record)), ENRICHED, ERASURE)
    assert [(E.ErrorCode.Name(r.code), r.field) for _, r in plan.rejected] == [
        ("ERROR_CODE_FIELD_INVALID", field)
    ]


@pytest.mark.parametrize("seconds", [-62_135_596_800, 253_402_300_799])
def test_an_erasure_out_of_range_is_dead_lettered_by_the_writer(seconds: int) -> None:
    request = F.ErasureRequest(user_id="u1", request_id="r")
    request.requested_at.seconds = seconds
    sink = ListSink()
    handler = vector_handler(4, sink)
    prepared = handler.prepare(
        batch((ERASURE, request.SerializeToString()), (ENRICHED, enriched("m1")))
    )
    assert prepared.erasures == {}
    assert sink.dead() == [(0, "ERROR_CODE_TIMESTAMP_INVALID", "requested_at")]


def test_analytics_dead_letters_ids_and_values_its_indexes_would_refuse() -> None:
    good = enriched("m1")
    feedback = F.FeedbackEvent(
        feedback_id="f1",
        user_id="bad user",
        campaign_id="c1",
        type=F.FEEDBACK_TYPE_CLICK,
    )
    feedback.timestamp.FromDatetime(datetime(2026, 1, 1, tzinfo=UTC))
    plan = analytics_service.plan_batch(
        batch(
            (ENRICHED, good),
            (ENRICHED, enriched("m2", channel="x" * 3000)),
            (ENRICHED, enriched("m3", campaign="c" * 3000)),
            (FEEDBACK, feedback.SerializeToString()),
        ),
        ENRICHED,
        FEEDBACK,
        ERASURE,
    )
    analytics_service.bound_lengths(plan)
    assert list(plan.messages) == ["m1"]
    assert [(m.offset(), E.ErrorCode.Name(r.code), r.field) for m, r in plan.rejected] == [
        (1, "ERROR_CODE_FIELD_INVALID", "message.channel"),
        (2, "ERROR_CODE_FIELD_INVALID", "campaigns"),
        (3, "ERROR_CODE_USER_ID_INVALID", "user_id"),
    ]


@pytest.mark.parametrize(
    ("message", "code", "field"),
    [
        (
            E.ValidatedMessage(message_id="m1", user_id="u 1", text="hi"),
            "USER_ID_INVALID",
            "user_id",
        ),
        (
            E.ValidatedMessage(message_id="m/1", user_id="u1", text="hi"),
            "SCHEMA_INVALID",
            "message_id",
        ),
        (
            E.ValidatedMessage(message_id="m1", user_id="u1", text="x" * 4001),
            "MESSAGE_TOO_LONG",
            "text",
        ),
        (E.ValidatedMessage(message_id="m1", user_id="u1", text="hi"), "TIMESTAMP_INVALID", ""),
        (E.ValidatedMessage(message_id="m1", user_id="u1", text="hi"), "TIMESTAMP_MISSING", ""),
    ],
)
def test_the_embedder_refuses_what_ingest_would_have(
    message: E.ValidatedMessage, code: str, field: str
) -> None:
    message = E.ValidatedMessage.FromString(message.SerializeToString())
    if code != "TIMESTAMP_MISSING":
        message.timestamp.seconds = 2**40 if code == "TIMESTAMP_INVALID" else 1_780_000_000
    field = field or "timestamp"
    msg = Message(topic="validated", partition=0, offset=0, value=message.SerializeToString())
    rejection = embedder_service.decode(msg, max_chars=4000)
    assert isinstance(rejection, Rejection)
    assert (E.ErrorCode.Name(rejection.code), rejection.field) == (f"ERROR_CODE_{code}", field)  # type: ignore[arg-type]


def test_ingest_dead_letters_an_event_at_kafkas_size_limit_within_the_limit() -> None:
    sink = ListSink()
    handle = ingest_service.build_handler(settings(dead_letter_max_bytes=900_000), sink)
    event = b'{"user_id": "u1", "timestamp": 1780000000000, "message": "' + b"x" * 999_800 + b'"}'
    handle([Message(topic="raw", partition=1, offset=5, key=b"u1", value=event)])
    ((topic, value, key),) = sink.records
    assert topic == "dlq" and len(value) + len(key or b"") <= 900_000
    dead = E.DeadLetter.FromString(value)
    assert E.ErrorCode.Name(dead.code) == "ERROR_CODE_MESSAGE_TOO_LONG"
    assert (dead.source.topic, dead.source.offset) == ("raw", 5)
    assert dead.truncated.value_size == len(event) and event.startswith(dead.original_value)


class _FollowerCore:
    """What the recommender's activity follower asks of its core, recorded."""

    def __init__(self) -> None:
        self.milvus = type("M", (), {"store": type("S", (), {"dimension": 4})()})()
        self.appended: dict[str, list[Any]] = {}
        self.cache = self

    def is_erased(self, user_id: str, ts_ms: int) -> bool:
        return False

    def append_sessions(self, sessions: dict[str, list[Any]]) -> None:
        self.appended.update(sessions)


class _NoLedger:
    def erased_at(self, users: Any) -> dict[str, datetime]:
        return {}


def test_the_activity_follower_skips_poison_and_keeps_the_rest() -> None:
    from mpp_recommender.activity import ActivityFollower

    follower = object.__new__(ActivityFollower)
    core = _FollowerCore()
    follower._core, follower._topics = core, Topics(enriched=ENRICHED)  # type: ignore[assignment]
    follower._ledger = _NoLedger()  # type: ignore[assignment]
    follower.messages = follower.erasures = 0
    late = E.EnrichedMessage.FromString(enriched("m3", user_id="u3"))
    late.message.timestamp.seconds = 2**40
    follower.handle(
        batch(
            (ENRICHED, enriched("m1", user_id="u1")),
            (ENRICHED, enriched("m2", user_id="u2", dim=5)),
            (ENRICHED, late.SerializeToString()),
            (ENRICHED, b"\xff junk"),
        )
    )
    assert list(core.appended) == ["u1"] and follower.messages == 1
