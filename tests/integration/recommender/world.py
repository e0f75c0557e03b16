"""The recommender tests' world (fixtures ``world`` and ``core``, through conftest.py; the
fuzz tests import them): its own PostgreSQL database (the default catalog loaded), Kafka
topics, Milvus collections (the catalog's campaign vectors written) and user ids; Neo4j and
Redis data are keyed by those ids and removed afterwards. Also the sample conversations and
``read_topic``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer
from mpp_embedder.service import build_enricher
from mpp_recommender.core import Recommender

from mpp.catalog import default_campaigns_path, parse_campaigns
from mpp.config import Settings
from mpp.embedding import Embedder
from mpp.intents import campaign_text
from mpp.stores import redis_client
from mpp.stores.campaigns import upsert_campaigns
from mpp.stores.graph_rows import MessageNode
from mpp.stores.milvus import MilvusVectorStore
from mpp.stores.neo4j import Neo4jGraphStore
from mpp.stores.vector_rows import CampaignVector, MessageVector
from mpp.v1 import events_pb2 as E
from tests.integration.stores.helpers import drop_collections, eventually

TRAVEL = [
    "I'm flying to Lisbon next month and need a cheap hotel near the beach",
    "we want to book flights for our summer vacation abroad",
    "any tips for a beach holiday trip in Greece?",
]
FOOD = "I'm starving, let's order pizza and sushi for dinner tonight"


@dataclass
class World:
    settings: Settings
    tag: str
    embedder: Embedder

    def user(self, name: str) -> str:
        return f"{self.tag}-{name}"

    def enriched(self, user_id: str, texts: list[str], start_ms: int) -> list[E.EnrichedMessage]:
        """Messages as the embedder enriches them (the real model, intents and links)."""
        enricher = build_enricher(self.settings, self.embedder)
        enricher.linker.update(parse_campaigns(default_campaigns_path()))
        validated = []
        for i, text in enumerate(texts):
            message = E.ValidatedMessage(
                message_id=f"{user_id}-m{start_ms + i}", user_id=user_id, text=text, channel="chat"
            )
            message.timestamp.FromMilliseconds(start_ms + i * 1000)
            validated.append(message)
        return enricher.enrich(validated)

    def write(self, messages: list[E.EnrichedMessage]) -> None:
        """What the vector-writer and graph-writer would write."""
        store = MilvusVectorStore(self.settings)
        store.upsert_messages([MessageVector.from_enriched(m) for m in messages])
        graph = Neo4jGraphStore(self.settings)
        graph.merge_messages([MessageNode.from_enriched(m) for m in messages])
        graph.close()
        ids = {m.message.message_id for m in messages}
        user = messages[0].message.user_id
        assert eventually(
            lambda: ids <= {v.message_id for v in store.user_vectors(user, limit=100)}
        )
        store.close()

    def sql(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.settings.postgres.conninfo(), autocommit=True) as conn:
            cur = conn.execute(statement.encode(), params)
            return cur.fetchall() if cur.description else []


def recommender_settings(settings: Settings, unique: str, **recommender: Any) -> Settings:
    milvus = settings.milvus.model_copy(
        update={
            "messages_collection": f"t_{unique}_messages",
            "campaigns_collection": f"t_{unique}_campaigns",
        }
    )
    kafka = settings.kafka.model_copy(update={"group_prefix": f"test-{unique}"})
    # Correctness tests: generous deadlines, so that a machine busy with other work does not
    # turn a slow source into a degraded answer (the outage tests set the defaults back).
    timeouts = {f"{s}_timeout_s": 2.0 for s in ("milvus", "neo4j", "postgres")}
    rec = settings.recommender.model_copy(
        update={"breaker_reset_s": 0.5, **timeouts, **recommender}
    )
    return settings.model_copy(update={"milvus": milvus, "kafka": kafka, "recommender": rec})


def seed_catalog(settings: Settings, embedder: Embedder) -> None:
    """The default catalog in PostgreSQL, its vectors in Milvus (what the embedder writes)."""
    campaigns = parse_campaigns(default_campaigns_path())
    with psycopg.connect(settings.postgres.conninfo()) as conn:
        upsert_campaigns(conn, campaigns)
    vectors = embedder.encode([campaign_text(c) for c in campaigns])
    store = MilvusVectorStore(settings)
    store.upsert_campaigns(
        [
            CampaignVector(
                campaign_id=c.campaign_id,
                embedding=v,
                active=c.active,
                starts_at_ms=int(c.starts_at.timestamp() * 1000) if c.starts_at else 0,
                ends_at_ms=int(c.ends_at.timestamp() * 1000) if c.ends_at else 0,
            )
            for c, v in zip(campaigns, vectors, strict=True)
        ]
    )
    assert eventually(lambda: len(store.search_campaigns([1.0] * store.dimension, k=50)) > 0)  # type: ignore[operator]
    store.close()


def clean_up(settings: Settings, tag: str) -> None:
    drop_collections(settings)
    graph = Neo4jGraphStore(settings)
    graph._driver.execute_query(
        "MATCH (n) WHERE n.id STARTS WITH $tag DETACH DELETE n", tag=f"{tag}-"
    )
    graph.close()
    redis = redis_client(settings)
    keys = list(redis.scan_iter(match=f"mpp:*{tag}-*", count=1000))
    if keys:
        redis.delete(*keys)


@pytest.fixture
def world(database_settings: Settings, unique: str, embedder: Embedder) -> Iterator[World]:
    settings = recommender_settings(database_settings, unique)
    seed_catalog(settings, embedder)
    yield World(settings, unique, embedder)
    clean_up(settings, unique)


@pytest.fixture
def core(world: World) -> Iterator[Recommender]:
    recommender = Recommender(world.settings)
    recommender.start()
    yield recommender
    recommender.close()


def read_topic(settings: Settings, topic: str, expected: int) -> list[Any]:
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"reader-{topic}-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    got: list[Any] = []
    deadline = time.monotonic() + 30
    while len(got) < expected and time.monotonic() < deadline:
        got += [m for m in consumer.consume(100, timeout=0.5) if m.error() is None]
    consumer.close()
    return got
