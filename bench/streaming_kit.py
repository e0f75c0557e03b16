"""What bench/streaming.py's stages share: topics and collections of a run's own, a service's
loop timed in steady state, the bare calls timed, and the rows each repetition writes afresh."""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer

from mpp.config import Settings
from mpp.kafka import TrackedProducer, ensure_topics
from mpp.kafka.testing import isolated_kafka
from mpp.pipeline import log
from mpp.service import Worker, build_loop, freeze_startup_objects
from mpp.v1 import events_pb2 as E


def isolated(settings: Settings, run: str) -> Settings:
    kafka = isolated_kafka(settings.kafka, run, create=False, group_prefix=f"bench-{run}")
    milvus = settings.milvus.model_copy(
        update={
            "messages_collection": f"messages_{run}",
            "campaigns_collection": f"campaigns_{run}",
        }
    )
    ensure_topics(kafka)
    return settings.model_copy(update={"kafka": kafka, "milvus": milvus})


def run_stage(settings: Settings, worker: Worker, records: int) -> float:
    """Records per second of a service's loop in steady state: from the commit of its first
    batch to the commit of the last record. The first batch is the warm-up (the group's join,
    a collection or constraint created on first use), as the bare calls get theirs."""
    loop = build_loop(settings, worker)
    commits: list[tuple[float, int]] = []
    committed = loop._committed

    def timed_commit(batch: list[Any], started: float) -> None:
        committed(batch, started)
        commits.append((time.perf_counter(), loop.stats.records))

    loop._committed = timed_commit  # type: ignore[method-assign]
    # As ``run_worker`` does before its loop (here the bench's own data is frozen with it).
    freeze_startup_objects()
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    while loop.stats.records < records:
        time.sleep(0.005)
    loop.stop()
    thread.join(60)
    if len(commits) < 2:
        raise SystemExit(
            f"{worker.name}: all {records} records came in one batch, which is the warm-up; "
            f"run with --events above its batch size ({worker.batch_size})"
        )
    (first, warm_up), (end, done) = commits[0], commits[-1]
    return (done - warm_up) / (end - first)


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


def chunked(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def median(values: list[float]) -> float:
    return statistics.median(values)


def rekeyed(enriched: list[E.EnrichedMessage], tag: str) -> list[E.EnrichedMessage]:
    """The same rows under ids of their own, so that every repetition is a first write."""
    out = []
    for e in enriched:
        copy = E.EnrichedMessage()
        copy.CopyFrom(e)
        copy.message.message_id = f"{tag}-{e.message.message_id}"
        copy.message.user_id = f"{tag}-{e.message.user_id}"
        out.append(copy)
    return out


def produce_all(settings: Settings, topic: str, values: list[bytes], keys: list[str]) -> None:
    producer = TrackedProducer(settings.kafka, service="bench")
    for key, value in zip(keys, values, strict=True):
        producer.produce(topic, value, key=key)
    producer.flush()
