"""graph-writer: enriched messages in, Neo4j MERGEs out; erasure requests remove a user.

Loop (mpp.kafka.BatchLoop): consume ``conversations.enriched`` (``EnrichedMessage``) and
``users.erasure`` (``ErasureRequest``), planned by ``mpp.writers.plan_batch`` (dedupe by
message_id, erasures first, rejects to ``conversations.dlq``); then erased users are DETACH
DELETEd with their messages and the batch is MERGEd in one statement, and only then are its
offsets committed: replays change no counts.

Neo4j down: the driver retries inside its managed transaction, then ``RetryableError`` hands
the batch back to the loop, which retries it with backoff.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from mpp import writers
from mpp.config import Settings
from mpp.erasure import ErasureLedger
from mpp.graph import GraphStore, MessageNode
from mpp.kafka import Handler, Sink, TrackedProducer
from mpp.service import Worker
from mpp.v1 import events_pb2

SERVICE = "graph-writer"

check_enriched = writers.check_ids
plan_batch = partial(writers.plan_batch, check=check_enriched)


def build_handler(
    settings: Settings,
    store: GraphStore,
    producer: Sink,
    ledger: ErasureLedger | None = None,
) -> Handler:
    def write(messages: Sequence[events_pb2.EnrichedMessage]) -> object:
        return store.merge_messages([MessageNode.from_enriched(e) for e in messages])

    return writers.build_handler(
        settings, SERVICE, producer, check_enriched, store.delete_user, write, ledger
    )


def worker(settings: Settings) -> Worker:
    store = GraphStore(settings)
    producer = TrackedProducer(settings.kafka, service=SERVICE)
    ledger = ErasureLedger(settings)
    return Worker(
        name=SERVICE,
        topics=[settings.kafka.topics.enriched, settings.kafka.topics.erasure],
        handler=build_handler(settings, store, producer, ledger),
        batch_size=settings.graph_writer.batch_size,
        max_wait_s=settings.graph_writer.max_wait_s,
        producer=producer,
        readiness=lambda: store.ping() or ledger.ping(),
    )
