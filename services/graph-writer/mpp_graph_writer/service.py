"""graph-writer: enriched messages in, Neo4j MERGEs out; erasure requests remove a user.

Loop (mpp.kafka.BatchLoop): consume ``conversations.enriched`` (``EnrichedMessage``) and
``users.erasure`` (``ErasureRequest``), planned by ``mpp.writers.plan_batch`` (dedupe by
message_id, erasures first, rejects to ``conversations.dlq``); then erasures are recorded in
the ledger (``mpp.erasure``), erased users are DETACH DELETEd with their messages, messages an
erased user sent before the erasure are dropped, the batch is MERGEd in one statement, and only
then are its offsets committed: replays change no counts. The loop itself is
``mpp.writers.worker``, shared with the vector-writer.

A record Neo4j cannot take goes to the DLQ (``SCHEMA_INVALID``/``FIELD_INVALID``), never to
the store: ids missing or too long (``mpp.writers.check_ids``), campaign ids and intent names
longer than ``MAX_ID_CHARS`` (they key indexed nodes, and an index refuses keys of several
kilobytes, which would fail the batch forever).

Neo4j down: the driver retries inside its managed transaction, then ``RetryableError`` hands
the batch back to the loop, which retries it with backoff.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from mpp import writers
from mpp.codecs import Rejection
from mpp.config import Settings
from mpp.service import Worker
from mpp.stores.base import MAX_ID_CHARS
from mpp.stores.graph_rows import MergeBatch
from mpp.stores.neo4j import Neo4jGraphStore
from mpp.v1 import events_pb2

SERVICE = "graph-writer"


def check_enriched(enriched: events_pb2.EnrichedMessage) -> Rejection | None:
    """Why the message cannot be merged into the graph, or None."""
    rejection = writers.check_ids(enriched)
    if rejection is not None:
        return rejection
    keys = [("message.campaign_id", enriched.message.campaign_id)]
    keys += [("campaigns", link.campaign_id) for link in enriched.campaigns]
    keys += [("intents", scored.intent) for scored in enriched.intents]
    for name, value in keys:
        if len(value) > MAX_ID_CHARS:
            return Rejection(
                events_pb2.ERROR_CODE_FIELD_INVALID,
                name,
                f"{name} holds a key of {len(value)} characters; at most {MAX_ID_CHARS}",
            )
    return None


plan_batch = partial(writers.plan_batch, check=check_enriched)


def rows(messages: Sequence[events_pb2.EnrichedMessage]) -> MergeBatch:
    return MergeBatch.of_enriched(messages)


def worker(settings: Settings) -> Worker:
    store = Neo4jGraphStore(settings)
    # A message_id another user owns is dead-lettered (MESSAGE_ID_CONFLICT), never moved.
    writer = writers.StoreWriter(
        rows, store.merge_batch, store.screen_message_ids, "neo4j", "merge"
    )
    return writers.worker(settings, SERVICE, store, check_enriched, writer, settings.graph_writer)
