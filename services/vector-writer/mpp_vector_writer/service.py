"""vector-writer: enriched messages in, Milvus rows out; erasure requests remove a user's rows.

Loop (mpp.kafka.BatchLoop): consume ``conversations.enriched`` (``EnrichedMessage``) and
``users.erasure`` (``ErasureRequest``), planned by ``mpp.writers.plan_batch`` (dedupe by
message_id, erasures first, rejects to ``conversations.dlq``); then erasures are recorded in
the ledger (``mpp.erasure``), erased users' rows are deleted, messages an erased user sent
before the erasure are dropped, the rest upserted by message_id, and only then the batch's
offsets are committed: replays rewrite the same rows. The loop itself is
``mpp.writers.worker``, shared with the graph-writer.

A record Milvus cannot take goes to the DLQ (``FIELD_INVALID``), never to the store: an
embedding that is empty, not finite, or of another dimension than the collection's (before the
collection exists: than most of its batch's), strings longer than the schema's columns.

Milvus down or slow: ``RetryableError``, the loop retries the batch. The collection turning
out, at write time, to hold another dimension or lack a field (``DimensionMismatchError``,
``SchemaMismatchError``): the service stops with an error naming the fix.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from functools import partial

from mpp import writers
from mpp.codecs import Rejection
from mpp.config import Settings
from mpp.ownership import chained
from mpp.service import Worker
from mpp.stores.base import MAX_ID_CHARS
from mpp.stores.milvus import MilvusVectorStore
from mpp.stores.milvus_errors import DimensionMismatchError, SchemaMismatchError
from mpp.stores.vector_rows import MAX_NAME_CHARS, MAX_SHORT_CHARS, MessageVector
from mpp.v1 import events_pb2

SERVICE = "vector-writer"


def _too_long(name: str, value: str, limit: int) -> Rejection | None:
    if len(value) <= limit:
        return None
    return Rejection(
        events_pb2.ERROR_CODE_FIELD_INVALID,
        name,
        f"{name} has {len(value)} characters; the Milvus column holds at most {limit}",
    )


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
    # NaN or infinity: Milvus refuses the row (and a cosine of it means nothing). The sum is
    # finite exactly when every value is: float32 values cannot add up to a float64 overflow.
    if not math.isfinite(sum(enriched.embedding)):
        return Rejection(
            events_pb2.ERROR_CODE_FIELD_INVALID,
            "embedding",
            "embedding holds NaN or infinite values; the embedder sends unit vectors",
        )
    message = enriched.message
    top = enriched.intents[0].intent if enriched.intents else ""
    for name, value, limit in (
        ("message.channel", message.channel, MAX_SHORT_CHARS),
        ("message.locale", message.locale, MAX_SHORT_CHARS),
        ("message.campaign_id", message.campaign_id, MAX_ID_CHARS),
        ("intents", top, MAX_NAME_CHARS),
        ("model", enriched.model, MAX_NAME_CHARS),
    ):
        rejection = _too_long(name, value, limit)
        if rejection is not None:
            return rejection
    return None


def dimension_screen(store: MilvusVectorStore) -> writers.Screen:
    """The messages whose embedding's dimension is not the collection's. Before the
    collection exists, the dimension most of the batch has (the first seen on a tie) is the
    one the collection will be made with."""

    def screen(
        messages: Sequence[events_pb2.EnrichedMessage],
    ) -> list[tuple[events_pb2.EnrichedMessage, Rejection]]:
        dims = Counter(len(e.embedding) for e in messages)
        expected = store.collection_dimension()
        if expected is None:
            expected = dims.most_common(1)[0][0]
            holder = f"the collection {store.messages.name!r} is made for"
        else:
            holder = f"the Milvus collection {store.messages.name!r} holds"
        if set(dims) == {expected}:
            return []
        return [
            (
                e,
                Rejection(
                    events_pb2.ERROR_CODE_FIELD_INVALID,
                    "embedding",
                    f"embedding has {len(e.embedding)} values but {holder} "
                    f"{expected}-dimensional vectors; another model's vectors need a collection "
                    "of their own (MPP_MILVUS__MESSAGES_COLLECTION)",
                ),
            )
            for e in messages
            if len(e.embedding) != expected
        ]

    return screen


plan_batch = partial(writers.plan_batch, check=check_enriched)


def rows(messages: Sequence[events_pb2.EnrichedMessage]) -> list[MessageVector]:
    return [MessageVector.from_enriched(e) for e in messages]


def worker(settings: Settings) -> Worker:
    store = MilvusVectorStore(settings)
    # A message_id another user owns is dead-lettered (MESSAGE_ID_CONFLICT), never moved.
    screen = chained(dimension_screen(store), store.screen_message_ids)
    writer = writers.StoreWriter(rows, store.upsert_messages, screen, "milvus", "upsert")
    return writers.worker(
        settings,
        SERVICE,
        store,
        check_enriched,
        writer,
        settings.vector_writer,
        fatal=(DimensionMismatchError, SchemaMismatchError),
    )
