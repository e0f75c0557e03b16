"""The recommender bench's world: a run's own PostgreSQL database, Kafka topics, Milvus
collections, user ids and Redis keys (``isolated``), seeded with users and their messages
(``seed``), the service started as its own process on them (``start_service``), and all of it
removed afterwards (``clean``).

Data: the default catalog (15 campaigns, their vectors from the packaged model), and ``users``
users with 10 chat messages each (real embeddings of chitchat messages) in Milvus and Neo4j,
intents and campaign links as the embedder tags them. The service runs with authentication
on (the key ``KEY``, admin, a rate limit far above what a bench asks).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import streaming_kit

from mpp.auth import key_entry
from mpp.catalog import Campaign, default_campaigns_path, parse_campaigns
from mpp.config import Settings
from mpp.db import migrate
from mpp.embedding import Embedder
from mpp.enrich import build_enricher
from mpp.intents import campaign_text
from mpp.kafka.testing import drop_topics
from mpp.pipeline import free_port, world_env
from mpp.samples import chitchat_events
from mpp.stack import repo_root
from mpp.stores import milvus_client, redis_client
from mpp.stores.campaigns import upsert_campaigns
from mpp.stores.graph_rows import MessageNode
from mpp.stores.milvus import MilvusVectorStore
from mpp.stores.neo4j import Neo4jGraphStore
from mpp.stores.vector_rows import CampaignVector, MessageVector
from mpp.v1 import events_pb2 as E

KEY = "bench-key"
MESSAGES_PER_USER = 10


def isolated(settings: Settings, run: str) -> Settings:
    """The streaming bench's topics and collections of the run's own (their topics created),
    and a PostgreSQL database of its own (created by ``seed``)."""
    streaming = streaming_kit.isolated(settings, run)
    postgres = settings.postgres.model_copy(update={"database": f"mpp_bench_{run}"})
    return streaming.model_copy(update={"postgres": postgres})


def create_database(settings: Settings) -> list[Campaign]:
    """The run's PostgreSQL database, migrated, with the default catalog (returned)."""
    admin = settings.postgres.model_copy(update={"database": "mpp"}).conninfo()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{settings.postgres.database}"')
    migrate(settings.postgres.conninfo())
    campaigns = parse_campaigns(default_campaigns_path())
    with psycopg.connect(settings.postgres.conninfo()) as conn:
        upsert_campaigns(conn, campaigns)
    return campaigns


def seed(settings: Settings, run: str, users: int) -> list[str]:
    """Catalog, campaign vectors, and each user's messages in Milvus and Neo4j."""
    campaigns = create_database(settings)
    embedder = Embedder()
    enricher = build_enricher(settings, embedder)
    enricher.linker.update(campaigns)
    store = MilvusVectorStore(settings)
    vectors = embedder.encode([campaign_text(c) for c in campaigns])
    store.upsert_campaigns(
        [
            CampaignVector(c.campaign_id, v, c.active, 0, 0)
            for c, v in zip(campaigns, vectors, strict=True)
        ]
    )
    texts = [
        e["message"] for e in chitchat_events(users * MESSAGES_PER_USER) if e["message"].strip()
    ]
    rng = random.Random(7)
    ids = [f"{run}-u{i}" for i in range(users)]
    validated = []
    for n in range(users * MESSAGES_PER_USER):
        message = E.ValidatedMessage(
            message_id=f"{run}-m{n}", user_id=ids[n % users], text=rng.choice(texts)
        )
        message.timestamp.FromMilliseconds(1_780_000_000_000 + n * 1000)
        validated.append(message)
    enriched = enricher.enrich(validated)
    store.upsert_messages([MessageVector.from_enriched(e) for e in enriched])
    graph = Neo4jGraphStore(settings)
    for start in range(0, len(enriched), 1000):
        graph.merge_messages([MessageNode.from_enriched(e) for e in enriched[start : start + 1000]])
    graph.close()
    store.close()
    return ids


def clean(settings: Settings, run: str) -> None:
    client = milvus_client(settings)
    for name in (settings.milvus.messages_collection, settings.milvus.campaigns_collection):
        if client.has_collection(name):
            client.drop_collection(name)
    graph = Neo4jGraphStore(settings)
    graph._driver.execute_query("MATCH (n) WHERE n.id STARTS WITH $p DETACH DELETE n", p=f"{run}-")
    graph.close()
    r = redis_client(settings)
    keys = list(r.scan_iter(match=f"mpp:*{run}-*", count=1000))
    for start in range(0, len(keys), 1000):
        r.delete(*keys[start : start + 1000])
    admin = settings.postgres.model_copy(update={"database": "mpp"}).conninfo()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{settings.postgres.database}" WITH (FORCE)')
    drop_topics(settings.kafka)


def start_service(
    settings: Settings, home: Path, workers: int = 1
) -> tuple[subprocess.Popen[bytes], str, str]:
    """The service as a process with ``workers`` worker processes, once /readyz says ready
    on every worker."""
    http_port, grpc_port = free_port(), free_port()
    # The run's own settings; MPP_RECOMMENDER__* from the environment pass through, so that
    # settings can be compared (e.g. MPP_RECOMMENDER__GRPC_WORKERS=8).
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MPP_") or k.startswith("MPP_RECOMMENDER__")
    }
    env.update(world_env(settings))
    env.update(
        {
            "MPP_HTTP__PORT": str(http_port),
            "MPP_GRPC__PORT": str(grpc_port),
            # Authentication on, with a rate limit far above what the bench asks.
            "MPP_AUTH__KEYS": json.dumps(
                [key_entry("bench", KEY, ["admin"], rate_per_s=1e9, burst=1_000_000)]
            ),
            "MPP_LOG_LEVEL": "WARNING",
            "MPP_RECOMMENDER__WORKERS": str(workers),
        }
    )
    out = (home / "recommender.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "mpp_recommender"], env=env, cwd=repo_root(), stdout=out, stderr=out
    )
    http = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 120
    ready: set[int] = set()
    while len(ready) < workers:
        if process.poll() is not None:
            raise RuntimeError((home / "recommender.log").read_text()[-2000:])
        try:
            # A new connection each time: the kernel picks a worker for each.
            answer = httpx.get(f"{http}/readyz", timeout=1)
            if answer.status_code == 200:
                ready.add(answer.json()["worker"])
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the recommender's workers {sorted(ready)} ready in 120 s")
        time.sleep(0.05)
    return process, http, f"127.0.0.1:{grpc_port}"
