"""Throughput of the streaming path, each stage beside its bare library call, in one run.

    .venv/bin/python bench/streaming.py [--events 3000]

Needs the local stack (``make up``). Every run uses topics, consumer groups, collections and
user ids of its own, and removes its collections and graph nodes afterwards.

Printed, on the same N chitchat messages:
- embedder: the service's loop (consume ValidatedMessage, encode, tag, link, produce,
  commit) vs a bare ``SentenceTransformer.encode`` of the same texts;
- vector-writer: the service's loop vs bare ``MilvusClient.upsert`` calls of the same rows
  (same collection schema) in batches of the same size;
- graph-writer: the service's loop vs one bare ``UNWIND ... MERGE`` statement per batch on the
  same rows (User, Message, SENT, the intents and campaign links; without the service's
  removal of links a re-enrichment dropped);
- end to end: raw events produced to Kafka until both stores hold every message, with the four
  services as processes, vs the bare encode rate (the slowest bare step).
Targets (issue #3): each stage at least 0.8 of its bare call; end to end at least 0.7.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer

from mpp.codecs import decode, decode_raw_event, encode
from mpp.config import Settings, Topics
from mpp.embedding import Embedder, packaged_model_path
from mpp.graph import GraphStore
from mpp.kafka import TrackedProducer, ensure_topics
from mpp.pipeline import STREAMING, Pipeline, log
from mpp.samples import chitchat_events
from mpp.service import Worker, build_loop
from mpp.stores import milvus_client, neo4j_driver
from mpp.v1 import events_pb2 as E
from mpp.validation import Rules, validate_event
from mpp.vectors import MessageVector, VectorStore


def isolated(settings: Settings, run: str) -> Settings:
    topics = Topics(
        **{k: f"{v}.{run}" for k, v in Topics().model_dump().items() if isinstance(v, str)}
    )
    kafka = settings.kafka.model_copy(update={"topics": topics, "group_prefix": f"bench-{run}"})
    milvus = settings.milvus.model_copy(
        update={
            "messages_collection": f"messages_{run}",
            "campaigns_collection": f"campaigns_{run}",
        }
    )
    ensure_topics(kafka)
    return settings.model_copy(update={"kafka": kafka, "milvus": milvus})


def run_stage(settings: Settings, worker: Worker, records: int) -> float:
    """Records per second of a service's loop in steady state: from the start of its second
    batch to the commit of the last record. The first batch is the warm-up (the group's join,
    a collection or constraint created on first use), as the bare calls get theirs."""
    starts: list[tuple[float, int]] = []
    handler = worker.handler

    def timed_handler(batch: list[Any]) -> None:
        if len(starts) < 2:
            starts.append((time.perf_counter(), len(batch)))
        handler(batch)

    worker.handler = timed_handler
    loop = build_loop(settings, worker)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    while loop.stats.records < records:
        time.sleep(0.005)
    end = time.perf_counter()
    loop.stop()
    thread.join(60)
    (_, warm_up), (second_start, _) = starts
    return (records - warm_up) / (end - second_start)


def read_values(settings: Settings, topic: str, count: int) -> list[bytes]:
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"read-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    values: list[bytes] = []
    while len(values) < count:
        values += [
            m.value() or b"" for m in consumer.consume(1000, timeout=1.0) if m.error() is None
        ]
    consumer.close()
    return values


def timed(label: str, work: Callable[[], Any], items: int) -> float:
    started = time.perf_counter()
    work()
    rate = items / (time.perf_counter() - started)
    log(f"{label}: {rate:,.0f}/s")
    return rate


def bare_merge(settings: Settings, rows: list[dict[str, Any]], batch: int) -> None:
    with neo4j_driver(settings) as driver:
        for i in range(0, len(rows), batch):
            driver.execute_query(
                """
                UNWIND $rows AS row
                MERGE (u:User {id: row.user_id})
                MERGE (m:Message {id: row.message_id})
                SET m.text = row.text, m.ts = row.ts
                MERGE (u)-[:SENT]->(m)
                FOREACH (i IN row.intents |
                    MERGE (n:Intent {name: i.name})
                    MERGE (m)-[r:HAS_INTENT]->(n) SET r.score = i.score)
                FOREACH (c IN row.campaigns |
                    MERGE (k:Campaign {id: c.id})
                    MERGE (m)-[r:ABOUT]->(k) SET r.score = c.score)
                """,
                rows=rows[i : i + batch],
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3000)
    args = parser.parse_args()
    n = args.events
    run = uuid.uuid4().hex[:8]
    settings = isolated(Settings(), run)
    topics = settings.kafka.topics
    results: list[tuple[str, float, float]] = []

    # The same N messages for every stage, validated as ingest would.
    rules = Rules.from_settings(settings.ingest)
    now = datetime.now(UTC)
    raw = [
        json.dumps({**e, "user_id": f"b{run}-{e['user_id'][:12]}"}).encode()
        for e in chitchat_events(n)
    ]
    validated = [validate_event(decode_raw_event(v), rules, now) for v in raw]
    texts = [v.text for v in validated]
    embedder = Embedder.from_settings(settings.embedder)
    embedder.encode(texts[:64])  # warm-up: first call pays for lazy initialization

    # -- embedder -----------------------------------------------------------------------------
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(packaged_model_path()), device="cpu", local_files_only=True)
    model.encode(texts[:64])
    bare_encode = timed(
        "bare SentenceTransformer.encode",
        lambda: model.encode(
            texts,
            batch_size=settings.embedder.encode_batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        ),
        n,
    )
    producer = TrackedProducer(settings.kafka, service="bench")
    for v in validated:
        producer.produce(topics.validated, encode(v), key=v.user_id)
    producer.flush()
    from mpp_embedder.service import build_worker as embedder_worker

    stage = run_stage(
        settings, embedder_worker(settings, embedder=embedder, load_campaigns=lambda: []), n
    )
    log(f"embedder service loop: {stage:,.0f}/s")
    results.append(("embedder vs bare encode", stage, bare_encode))

    # -- vector-writer ------------------------------------------------------------------------
    enriched = [decode(E.EnrichedMessage, v) for v in read_values(settings, topics.enriched, n)]
    client = milvus_client(settings)
    bare_name = f"bare_{run}"
    bare_store = VectorStore(
        settings.model_copy(
            update={
                "milvus": settings.milvus.model_copy(
                    update={
                        "messages_collection": bare_name,
                        "campaigns_collection": f"barec_{run}",
                    }
                )
            }
        )
    )
    bare_store.ensure_collections(embedder.dimension)
    # The very rows the service writes, prepared outside the timing.
    rows = [MessageVector.from_enriched(e).row() for e in enriched]
    batch = settings.vector_writer.batch_size

    def bare_upserts() -> None:
        for i in range(0, len(rows), batch):
            client.upsert(bare_name, rows[i : i + batch])

    bare_upsert = timed("bare MilvusClient.upsert", bare_upserts, n)
    from mpp_vector_writer.service import worker as vector_worker

    stage = run_stage(settings, vector_worker(settings), n)
    log(f"vector-writer service loop: {stage:,.0f}/s")
    results.append(("vector-writer vs bare upsert", stage, bare_upsert))
    client.drop_collection(bare_name)
    client.drop_collection(f"barec_{run}")

    # -- graph-writer -------------------------------------------------------------------------
    # The same rows under other ids, on the same labels (so the same uniqueness constraints).
    graph_rows = [
        {
            "user_id": "bare-" + e.message.user_id,
            "message_id": "bare-" + e.message.message_id,
            "text": e.message.text,
            "ts": e.message.timestamp.ToMilliseconds(),
            "intents": [
                {"name": i.intent, "score": i.score} for i in e.intents if i.intent != "unknown"
            ],
            "campaigns": [{"id": c.campaign_id, "score": c.score} for c in e.campaigns],
        }
        for e in enriched
    ]
    GraphStore(settings).ensure_schema()
    bare_graph = timed(
        "bare UNWIND MERGE",
        lambda: bare_merge(settings, graph_rows, settings.graph_writer.batch_size),
        n,
    )
    from mpp_graph_writer.service import worker as graph_worker

    stage = run_stage(settings, graph_worker(settings), n)
    log(f"graph-writer service loop: {stage:,.0f}/s")
    results.append(("graph-writer vs bare UNWIND MERGE", stage, bare_graph))

    # -- end to end ---------------------------------------------------------------------------
    e2e_run = uuid.uuid4().hex[:8]
    e2e_settings = isolated(Settings(), e2e_run)
    # Its own folder for the services' logs and pid files: never the managed services' one.
    home = Path(tempfile.mkdtemp(prefix="mpp-bench-"))
    pipeline = Pipeline(settings=e2e_settings, run_id=f"e{e2e_run}", home=home)
    e2e_raw = [
        json.dumps({**e, "user_id": f"e{e2e_run}-{e['user_id'][:12]}"}).encode()
        for e in chitchat_events(n)
    ]
    try:
        pipeline.start(*STREAMING)
        started = time.perf_counter()
        pipeline.produce(e2e_raw, [None] * n)
        end_to_end = n / (pipeline.wait_drained() - started)
        log(
            f"end to end (raw topic -> Milvus and Neo4j): {end_to_end:,.0f}/s; "
            f"milvus rows {pipeline.milvus_count()}, graph {pipeline.graph_counts()}"
        )
        results.append(("end to end vs bare encode", end_to_end, bare_encode))
    finally:
        pipeline.stop()
        pipeline.cleanup()
        with neo4j_driver(settings) as driver:
            for prefix in (f"b{run}-", f"bare-b{run}-"):
                driver.execute_query(
                    "MATCH (u:User) WHERE u.id STARTS WITH $p "
                    "OPTIONAL MATCH (u)-[:SENT]->(m) DETACH DELETE u, m",
                    p=prefix,
                )
        for name in (settings.milvus.messages_collection, settings.milvus.campaigns_collection):
            if client.has_collection(name):
                client.drop_collection(name)

    print(f"\nstreaming path, {n} chitchat messages, {embedder.model_id} ({embedder.dimension}d)")
    print(f"{'stage':38} {'service/s':>10} {'bare/s':>10} {'ratio':>6}  target")
    for label, service_rate, bare_rate in results:
        target = 0.7 if label.startswith("end") else 0.8
        ratio = service_rate / bare_rate
        verdict = "ok" if ratio >= target else "BELOW"
        print(
            f"{label:38} {service_rate:10,.0f} {bare_rate:10,.0f} {ratio:6.2f}  "
            f">= {target} {verdict}"
        )


if __name__ == "__main__":
    main()
