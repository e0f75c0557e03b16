"""graph-writer: enriched messages in, Neo4j MERGEs out; erasure requests remove a user.

Loop (mpp.kafka.BatchLoop): consume ``conversations.enriched`` (``EnrichedMessage``) and
``users.erasure`` (``ErasureRequest``), planned by ``mpp.writers.plan_batch`` (dedupe by
message_id, erasures first, rejects to ``conversations.dlq``); then erasures are recorded in
the ledger (``mpp.erasure``), erased users are DETACH DELETEd with their messages, messages an
erased user sent before the erasure are dropped, the batch is MERGEd in one statement, and only
then are its offsets committed: replays change no counts. The loop itself is
``mpp.writers.worker``, shared with the vector-writer.

Neo4j down: the driver retries inside its managed transaction, then ``RetryableError`` hands
the batch back to the loop, which retries it with backoff.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from mpp import writers
from mpp.config import Settings
from mpp.graph import GraphStore, MergeBatch
from mpp.service import Worker
from mpp.v1 import events_pb2

SERVICE = "graph-writer"

check_enriched = writers.check_ids
plan_batch = partial(writers.plan_batch, check=check_enriched)


def rows(messages: Sequence[events_pb2.EnrichedMessage]) -> MergeBatch:
    return MergeBatch.of_enriched(messages)


def worker(settings: Settings) -> Worker:
    store = GraphStore(settings)
    writer = writers.StoreWriter(rows, store.merge_batch)
    return writers.worker(settings, SERVICE, store, check_enriched, writer, settings.graph_writer)
