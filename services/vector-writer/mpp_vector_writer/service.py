"""vector-writer: enriched messages in, Milvus rows out; erasure requests remove a user's rows.

Loop (mpp.kafka.BatchLoop): consume ``conversations.enriched`` (``EnrichedMessage``) and
``users.erasure`` (``ErasureRequest``), planned by ``mpp.writers.plan_batch`` (dedupe by
message_id, erasures first, rejects to ``conversations.dlq``); then erasures are recorded in
the ledger (``mpp.erasure``), erased users' rows are deleted, messages an erased user sent
before the erasure are dropped, the rest upserted by message_id, and only then the batch's
offsets are committed: replays rewrite the same rows. The loop itself is
``mpp.writers.worker``, shared with the graph-writer.

Milvus down or slow: ``RetryableError``, the loop retries the batch. The collection holding
another dimension than the model's: the service stops with an error naming the fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from mpp import writers
from mpp.codecs import Rejection
from mpp.config import Settings
from mpp.service import Worker
from mpp.v1 import events_pb2
from mpp.vectors import MessageVector, VectorStore

SERVICE = "vector-writer"


def check_enriched(enriched: events_pb2.EnrichedMessage) -> Rejection | None:
    """Why the message cannot become a Milvus row, or None."""
    rejection = writers.check_ids(enriched)
    if rejection is not None:
        return rejection
    if not enriched.embedding:
        return Rejection(
            events_pb2.ERROR_CODE_FIELD_INVALID,
            "embedding",
            "embedding is empty; the embedder must send the vector",
        )
    if enriched.dimension and len(enriched.embedding) != enriched.dimension:
        return Rejection(
            events_pb2.ERROR_CODE_FIELD_INVALID,
            "embedding",
            f"embedding has {len(enriched.embedding)} values but dimension says "
            f"{enriched.dimension}",
        )
    return None


plan_batch = partial(writers.plan_batch, check=check_enriched)


def rows(messages: Sequence[events_pb2.EnrichedMessage]) -> list[MessageVector]:
    return [MessageVector.from_enriched(e) for e in messages]


def worker(settings: Settings) -> Worker:
    store = VectorStore(settings)
    writer = writers.StoreWriter(rows, store.upsert_messages)
    return writers.worker(settings, SERVICE, store, check_enriched, writer, settings.vector_writer)
