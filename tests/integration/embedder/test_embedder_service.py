"""The embedder service: its handler without a broker, then its loop on the real Kafka and
PostgreSQL of the local stack."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import numpy as np
import psycopg
import pytest
from confluent_kafka import Consumer, Message
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from mpp_embedder.service import (
    SERVICE,
    CampaignCatalog,
    build_handler,
    build_worker,
)

from mpp.catalog import Campaign, default_campaigns_path, parse_campaigns
from mpp.config import EmbedderSettings, KafkaSettings, PostgresSettings, Settings
from mpp.db import migrate
from mpp.embedding import Embedder
from mpp.enrich import build_enricher
from mpp.kafka import BatchLoop, TrackedProducer
from mpp.kafka.testing import ListSink, renamed_topics
from mpp.stores import postgres_connect
from mpp.stores.campaigns import read_campaigns, upsert_campaigns
from mpp.v1 import events_pb2 as pb
from tests.loops import committed, run_until

TRAVEL = "any tips for cheap flights and a beach hotel for our summer vacation abroad?"


def _validated(i: int, text: str, campaign_id: str = "") -> pb.ValidatedMessage:
    message = pb.ValidatedMessage(
        message_id=f"m-{i}", user_id=f"user-{i % 3}", text=text, campaign_id=campaign_id
    )
    message.timestamp.FromDatetime(datetime(2026, 1, 1, 12, i, tzinfo=UTC))
    return message


def _record(value: bytes | None, offset: int, **kwargs: object) -> Message:
    return Message(
        topic="conversations.validated", partition=1, offset=offset, value=value, **kwargs
    )


def _default_campaigns() -> list[Campaign]:
    return parse_campaigns(default_campaigns_path())


# -- the handler, no broker ---------------------------------------------------------------------


def test_handler_enriches_and_keys_by_user(embedder: Embedder) -> None:
    settings = Settings()
    enricher = build_enricher(settings, embedder)
    enricher.linker.update(_default_campaigns())
    producer = ListSink()
    handle = build_handler(settings, producer, enricher)
    batch = [
        _record(_validated(1, TRAVEL).SerializeToString(), 10),
        _record(_validated(2, "hello, how are you?", "food-delivery").SerializeToString(), 11),
    ]
    handle(batch)
    out = producer.on(settings.kafka.topics.enriched)
    assert len(out) == 2 and producer.on(settings.kafka.topics.dlq) == []
    travel, hello = (pb.EnrichedMessage.FromString(value) for value, _ in out)
    assert [key for _, key in out] == ["user-1", "user-2"]
    assert travel.message.message_id == "m-1" and travel.message.text == TRAVEL
    assert travel.dimension == 384 == len(travel.embedding)
    assert travel.model == embedder.model_id
    assert abs(np.linalg.norm(np.array(travel.embedding)) - 1) < 1e-4
    assert travel.intents[0].intent == "travel"
    assert travel.campaigns[0].campaign_id == "travel-summer"
    assert travel.campaigns[0].source == pb.CAMPAIGN_LINK_SOURCE_SIMILARITY
    assert hello.intents[0].intent == "greeting"
    assert (hello.campaigns[0].campaign_id, hello.campaigns[0].source) == (
        "food-delivery",
        pb.CAMPAIGN_LINK_SOURCE_EVENT,
    )
    assert hello.enriched_at.ToDatetime(tzinfo=UTC) <= datetime.now(UTC)


def test_undecodable_and_idless_records_go_to_the_dlq_whole(embedder: Embedder) -> None:
    settings = Settings()
    producer = ListSink()
    handle = build_handler(settings, producer, build_enricher(settings, embedder))
    garbage = b"not a protobuf"
    no_id = pb.ValidatedMessage(user_id="u", text="hi").SerializeToString()
    handle(
        [
            _record(garbage, 41, key=b"u1", headers=[("trace", b"abc"), ("bin", b"\xff")]),
            _record(no_id, 42),
            _record(None, 43),
            _record(_validated(5, "fine").SerializeToString(), 44),
        ]
    )
    letters = [pb.DeadLetter.FromString(v) for v, _ in producer.on(settings.kafka.topics.dlq)]
    assert [d.code for d in letters] == [
        pb.ERROR_CODE_UNDECODABLE,
        pb.ERROR_CODE_SCHEMA_INVALID,
        pb.ERROR_CODE_UNDECODABLE,
    ]
    first = letters[0]
    assert first.original_value == garbage and first.original_key == b"u1"
    assert dict(first.original_headers) == {"trace": "abc", "bin": "\\xff"}
    assert (first.source.topic, first.source.partition, first.source.offset) == (
        "conversations.validated",
        1,
        41,
    )
    assert first.service == SERVICE and "ValidatedMessage" in first.detail
    assert letters[1].field == "message_id"
    # The good record of the same batch still went through.
    (enriched,) = producer.on(settings.kafka.topics.enriched)
    assert pb.EnrichedMessage.FromString(enriched[0]).message.message_id == "m-5"


def test_catalog_refreshes_on_schedule_and_survives_an_outage() -> None:
    now = [0.0]
    results: list[list[Campaign] | Exception] = [
        _default_campaigns()[:2],
        psycopg.OperationalError("connection refused"),
        _default_campaigns()[:3],
    ]
    calls: list[float] = []

    def load() -> list[Campaign]:
        calls.append(now[0])
        result = results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    catalog = CampaignCatalog(load, refresh_s=60, clock=lambda: now[0])
    assert catalog.refresh_if_due() is True and len(catalog.campaigns) == 2
    now[0] = 30
    assert catalog.refresh_if_due() is False and calls == [0.0]
    now[0] = 61
    assert catalog.refresh_if_due() is False  # PostgreSQL is down: the last catalog stays
    assert len(catalog.campaigns) == 2 and catalog.loaded
    now[0] = 100
    assert catalog.refresh_if_due() is False and len(calls) == 2  # next try after refresh_s
    now[0] = 122
    assert catalog.refresh_if_due() is True and len(catalog.campaigns) == 3


def test_postgres_down_at_start_is_a_warning_not_a_crash(embedder: Embedder) -> None:
    # Nothing listens on port 1: connection refused at once.
    settings = Settings(postgres=PostgresSettings(port=1, connect_timeout_s=1))
    with pytest.raises(psycopg.OperationalError):
        read_campaigns(settings)
    # The worker reads the catalog at start: that failure must not stop it.
    assert build_worker(settings, embedder=embedder, store_campaign_vectors=False).name == SERVICE
    producer = ListSink()
    enricher = build_enricher(settings, embedder)
    catalog = CampaignCatalog(lambda: read_campaigns(settings), refresh_s=60)
    handle = build_handler(settings, producer, enricher, catalog)
    handle([_record(_validated(1, TRAVEL, "travel-summer").SerializeToString(), 1)])
    assert not catalog.loaded
    (value, _), *_ = producer.on(settings.kafka.topics.enriched)
    links = pb.EnrichedMessage.FromString(value).campaigns
    # Without a catalog only the event's own campaign is linked.
    assert [(c.campaign_id, c.source) for c in links] == [
        ("travel-summer", pb.CAMPAIGN_LINK_SOURCE_EVENT)
    ]


# -- the real servers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalog_in_postgres(stack_settings: Settings) -> list[Campaign]:
    """The default campaign catalog, loaded as `make demo` does (an idempotent upsert)."""
    migrate(stack_settings.postgres.conninfo())
    campaigns = _default_campaigns()
    with postgres_connect(stack_settings) as conn:
        upsert_campaigns(conn, campaigns)
    return campaigns


def test_reads_active_campaigns_from_postgres(
    stack_settings: Settings, catalog_in_postgres: list[Campaign]
) -> None:
    read = {c.campaign_id: c for c in read_campaigns(stack_settings)}
    for campaign in catalog_in_postgres:
        if campaign.active:
            assert read[campaign.campaign_id] == campaign
        else:
            assert campaign.campaign_id not in read


def _settings_for(stack_settings: Settings, unique: str, **embedder: object) -> Settings:
    topics = renamed_topics(unique)
    return stack_settings.model_copy(
        update={
            "kafka": stack_settings.kafka.model_copy(update={"topics": topics}),
            "embedder": EmbedderSettings(max_wait_s=0.5, **embedder),  # type: ignore[arg-type]
        }
    )


def _create_topics(kafka: KafkaSettings, *names: str) -> None:
    admin = AdminClient(kafka.client_config())
    for future in admin.create_topics([NewTopic(n, 2, 1) for n in names]).values():
        future.result(30)


def _read_all(kafka: KafkaSettings, topic: str, count: int, timeout_s: float = 30) -> list[Message]:
    consumer = Consumer(
        {**kafka.client_config(), "group.id": f"reader-{topic}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    out: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < count and time.monotonic() < deadline:
            out += [m for m in consumer.consume(count, timeout=0.5) if m.error() is None]
    finally:
        consumer.close()
    return out


@pytest.fixture
def stream(stack_settings: Settings, unique: str) -> Iterator[Callable[..., Settings]]:
    def make(**embedder: object) -> Settings:
        settings = _settings_for(stack_settings, unique, **embedder)
        topics = settings.kafka.topics
        _create_topics(settings.kafka, topics.validated, topics.enriched, topics.dlq)
        producer = TrackedProducer(settings.kafka, service="test")
        messages = [
            _validated(0, TRAVEL),
            _validated(1, "hey there, good morning!", "food-delivery"),
            _validated(2, "my dog needs new toys and a vet checkup"),
            _validated(3, "I have a job interview tomorrow"),
        ]
        for m in messages:
            producer.produce(topics.validated, m.SerializeToString(), key=m.user_id)
        producer.produce(topics.validated, b"\x08\xff", key=b"broken")
        producer.flush()
        return settings

    yield make


def _run_embedder(
    settings: Settings, embedder: Embedder, unique: str
) -> tuple[list[pb.EnrichedMessage], list[pb.DeadLetter], int]:
    # Kafka to Kafka only: the campaign vectors in Milvus have a test of their own.
    worker = build_worker(settings, embedder=embedder, store_campaign_vectors=False)
    group = f"embedder-{unique}"
    loop = BatchLoop(
        settings.kafka,
        worker.name,
        group,
        worker.topics,
        worker.handler,
        batch_size=worker.batch_size,
        max_wait_s=worker.max_wait_s,
        producer=worker.producer,
    )
    run_until(loop, lambda: loop.stats.records >= 5)
    topics = settings.kafka.topics
    enriched = [
        pb.EnrichedMessage.FromString(m.value() or b"")
        for m in _read_all(settings.kafka, topics.enriched, 4)
    ]
    letters = [
        pb.DeadLetter.FromString(m.value() or b"") for m in _read_all(settings.kafka, topics.dlq, 1)
    ]
    return enriched, letters, committed(settings.kafka, topics.validated, group)


def test_the_loop_enriches_from_kafka_to_kafka(
    stream: Callable[..., Settings],
    embedder: Embedder,
    unique: str,
    catalog_in_postgres: list[Campaign],
) -> None:
    settings = stream()
    enriched, letters, committed = _run_embedder(settings, embedder, unique)
    assert committed == 5
    by_id = {e.message.message_id: e for e in enriched}
    assert sorted(by_id) == ["m-0", "m-1", "m-2", "m-3"]
    for e in enriched:
        assert e.dimension == 384 == len(e.embedding)
        assert e.intents, "every message has at least one intent (or unknown)"
    assert by_id["m-0"].intents[0].intent == "travel"
    assert by_id["m-1"].intents[0].intent == "greeting"
    assert by_id["m-2"].intents[0].intent == "pets"
    assert by_id["m-3"].intents[0].intent == "work_career"
    # Similarity links come from the catalog read from PostgreSQL.
    assert by_id["m-0"].campaigns[0].campaign_id == "travel-summer"
    assert by_id["m-2"].campaigns[0].campaign_id == "pet-supplies"
    first = by_id["m-1"].campaigns[0]
    assert (first.campaign_id, first.source) == ("food-delivery", pb.CAMPAIGN_LINK_SOURCE_EVENT)
    (letter,) = letters
    assert letter.code == pb.ERROR_CODE_UNDECODABLE
    assert letter.original_value == b"\x08\xff" and letter.original_key == b"broken"
    assert letter.source.topic == settings.kafka.topics.validated


def test_the_1024_dimension_path(
    stream: Callable[..., Settings],
    embedder_1024: Embedder,
    unique: str,
    catalog_in_postgres: list[Campaign],
) -> None:
    settings = stream(project_to_dim=1024)
    enriched, _, committed = _run_embedder(settings, embedder_1024, unique)
    assert committed == 5 and len(enriched) == 4
    for e in enriched:
        assert e.dimension == 1024 == len(e.embedding)
        assert e.model.endswith("+orthoproj1024")
        assert abs(np.linalg.norm(np.array(e.embedding)) - 1) < 1e-4
    # Same cosines as the 384-dim model, so the same intents and links.
    travel = next(e for e in enriched if e.message.message_id == "m-0")
    assert travel.intents[0].intent == "travel"
    assert travel.campaigns[0].campaign_id == "travel-summer"
