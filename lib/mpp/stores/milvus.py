"""The vector store in Milvus: every read and write of message and campaign vectors.

The rows: ``mpp.stores.vector_rows``; the collections: ``mpp.stores.milvus_schema``.

Contracts (besides ``mpp.stores.base``'s):
- Writes are upserts by primary key (``message_id``, ``campaign_id``), never plain inserts:
  replaying a batch leaves the same rows.
- Vectors are the embedder's unit-normalized floats; the metric is COSINE, so a search score
  is the cosine similarity in [-1, 1], higher is closer.
- Times are epoch milliseconds, UTC (``INT64``); 0 means "not set" where a time is optional.
- The dimension comes from the model (the records' ``dimension``). A collection made for
  another dimension is refused with ``DimensionMismatchError``, which is not retryable: the
  operator names another collection or drops the old one.
- A server that is down or too slow raises ``mpp.kafka.RetryableError`` so that the batch loop
  retries the batch. Every call is bounded by ``milvus.timeout_s``: without a per-call timeout
  pymilvus retries some server errors 75 times (minutes).
- Reads may miss writes of the last ~10 ms on Milvus Lite (see VISIBILITY_LAG_S);
  ``delete_user`` accounts for it, so an erasure right after a write removes everything.
- A message belongs to the user who sent it first (``mpp.ownership``): ``screen_message_ids``
  names the messages whose id another user's row holds (one query per batch), which the
  vector-writer dead-letters instead of upserting over that row.
- Requests are split to at most ``milvus.max_request_bytes`` of vectors: on Milvus Lite 2.5.1
  one upsert above about 7 MB is 20-40 times slower than the same rows in 2 MB requests.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
from numpy.typing import NDArray
from pymilvus import MilvusClient
from pymilvus.exceptions import MilvusException

from mpp.config import Settings
from mpp.observability import store_operation, store_rows
from mpp.ownership import Conflicts, RecentOwners, screen_owners
from mpp.stores.base import VectorStore
from mpp.stores.clients import milvus_client
from mpp.stores.milvus_errors import (
    COLLECTION_NOT_FOUND,
    STORE,
    DimensionMismatchError,
    retryable,
)
from mpp.stores.milvus_schema import (
    VECTOR_FIELD,
    Collection,
    collections,
    ensure,
    vector_dimension,
)
from mpp.stores.vector_rows import (
    CampaignHit,
    CampaignVector,
    MessageVector,
    UserVector,
    chunks,
)
from mpp.v1 import events_pb2

# Milvus caps a query's result window (offset + limit) at 16,384 rows.
MAX_QUERY_ROWS = 16_384
# Milvus Lite 2.5.1 shows a write to readers (and to deletes by filter) about 10 ms after the
# upsert returned, even at Strong consistency: a re-upserted row is briefly missing, and a
# delete must look again after this long.
VISIBILITY_LAG_S = 0.05


def milvus_string(value: str) -> str:
    """A Milvus filter-expression string literal (Milvus Lite 2.5.1 fails filter_params)."""
    return json.dumps(value, ensure_ascii=False)


class MilvusVectorStore(VectorStore):
    """Message and campaign vectors in two Milvus collections (names from settings).

    Connects lazily, so that a service starts (and reports not ready) while Milvus is down.
    Threads may share a store: its only state is the client and the ensured dimension, and a
    race sets either twice to the same thing (pymilvus shares one channel per address).
    """

    def __init__(
        self,
        settings: Settings,
        client_factory: Callable[[Settings], MilvusClient] = milvus_client,
    ) -> None:
        # pymilvus logs every failed call at ERROR with a full traceback, dozens of lines a
        # retry while the server is away; the store raises RetryableError with the reason
        # instead, and the batch loop logs that once per retry.
        logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
        self._settings = settings
        self._cfg = settings.milvus
        self._factory = client_factory
        self._client: MilvusClient | None = None
        self._dim: int | None = None
        self.recent_owners = RecentOwners()
        self.messages, self.campaigns = collections(self._cfg)

    # -- plumbing ----------------------------------------------------------------------------

    @property
    def dimension(self) -> int | None:
        """The vector dimension once ``ensure_collections`` ran, else None."""
        return self._dim

    def _conn(self) -> MilvusClient:
        if self._client is None:
            self._client = self._factory(self._settings)
        return self._client

    @contextmanager
    def _op(self, operation: str) -> Iterator[MilvusClient]:
        """Counts and times one operation and turns transient failures into RetryableError."""
        with store_operation(STORE, operation):
            try:
                yield self._conn()
            except Exception as exc:
                if isinstance(exc, MilvusException) and exc.code == COLLECTION_NOT_FOUND:
                    # Dropped while we ran: forget what we ensured, so the retry recreates it.
                    self._dim = None
                retry = retryable(operation, exc)
                if retry is None:
                    raise
                raise retry from exc

    @property
    def _timeout(self) -> float:
        return self._cfg.timeout_s

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def ping(self) -> str | None:
        """Readiness: None when Milvus answers, else a short reason."""
        try:
            with self._op("ping") as client:
                client.list_collections(timeout=min(2.0, self._timeout))
        except Exception as exc:
            return f"milvus: {exc}"
        return None

    # -- schema ------------------------------------------------------------------------------

    def ensure_collections(self, dim: int) -> None:
        """Create both collections and their COSINE index when missing; idempotent.

        Raises DimensionMismatchError when a collection exists with another dimension, and
        SchemaMismatchError when it lacks a field this version writes.
        """
        if dim <= 0:
            raise ValueError(f"vector dimension must be positive, got {dim}")
        if self._dim == dim:
            return
        with self._op("ensure_collections") as client:
            for collection in (self.messages, self.campaigns):
                ensure(client, collection, dim, self._cfg)
        self._dim = dim

    def collection_dimension(self, collection: Collection | None = None) -> int | None:
        """The vector dimension of ``collection`` (default: the messages'): the one ensured,
        else the existing collection's; None while it does not exist. Raises RetryableError
        while Milvus is away."""
        if self._dim is not None:
            return self._dim
        name = (collection or self.messages).name
        with self._op("collection_dimension") as client:
            if not client.has_collection(name, timeout=self._timeout):
                return None
            described = client.describe_collection(name, timeout=self._timeout)
        return vector_dimension(described) or None

    def _exists(self, client: MilvusClient, collection: Collection) -> bool:
        return self._dim is not None or bool(
            client.has_collection(collection.name, timeout=self._timeout)
        )

    def _ensure_for(self, vectors: Sequence[Sequence[float] | NDArray[np.float32]]) -> int:
        dims = {len(v) for v in vectors}
        if len(dims) != 1:
            raise ValueError(f"vectors of several dimensions in one write: {sorted(dims)}")
        dim = dims.pop()
        self.ensure_collections(dim)
        return dim

    # -- writes ------------------------------------------------------------------------------

    def upsert_messages(self, rows: Sequence[MessageVector]) -> int:
        """Upsert by message_id (replays leave the same rows). Returns the rows written.

        Creates the collections on first use with the rows' dimension.
        """
        return self._upsert("upsert_messages", self.messages, rows)

    def upsert_campaigns(self, rows: Sequence[CampaignVector]) -> int:
        """Upsert campaign vectors by campaign_id. Returns the rows written."""
        return self._upsert("upsert_campaigns", self.campaigns, rows)

    def _upsert(
        self,
        operation: str,
        collection: Collection,
        rows: Sequence[MessageVector] | Sequence[CampaignVector],
    ) -> int:
        if not rows:
            return 0
        dim = self._ensure_for([r.embedding for r in rows])
        data = [r.row() for r in rows]
        with self._op(operation) as client:
            for part in chunks(data, dim, self._cfg.max_request_bytes):
                client.upsert(collection.name, list(part), timeout=self._timeout)
        store_rows(STORE, operation, len(data))
        return len(data)

    def delete_user(self, user_id: str) -> int:
        """Remove every message vector of ``user_id``; idempotent. Returns the rows removed.

        Deletes by primary key until a query, made after the visibility lag, finds none:
        Milvus Lite 2.5.1 resolves a delete's filter without rows upserted in the last few
        milliseconds (Strong consistency or not), so a single delete by filter right after a
        write left 40 of 100 rows behind in our tests.
        """
        self.recent_owners.forget_user(user_id)
        expr = f"user_id == {milvus_string(user_id)}"
        removed: set[str] = set()
        with self._op("delete_user") as client:
            if not self._exists(client, self.messages):
                return 0
            for _ in range(1000):
                time.sleep(VISIBILITY_LAG_S)
                found = client.query(
                    self.messages.name,
                    filter=expr,
                    output_fields=["message_id"],
                    limit=MAX_QUERY_ROWS,
                    timeout=self._timeout,
                    consistency_level="Strong",
                )
                ids = [str(r["message_id"]) for r in found]
                if not ids:
                    break
                client.delete(self.messages.name, ids=ids, timeout=self._timeout)
                removed.update(ids)
        store_rows(STORE, "delete_user", len(removed))
        return len(removed)

    # -- reads -------------------------------------------------------------------------------

    def message_owners(self, message_ids: Sequence[str]) -> dict[str, str]:
        """message_id -> user_id of those of ``message_ids`` stored: one query."""
        if not message_ids:
            return {}
        ids = ", ".join(milvus_string(i) for i in message_ids)
        with self._op("message_owners") as client:
            if not self._exists(client, self.messages):
                return {}
            found = client.query(
                self.messages.name,
                filter=f"message_id in [{ids}]",
                output_fields=["message_id", "user_id"],
                limit=len(message_ids),
                timeout=self._timeout,
                consistency_level="Strong",
            )
        return {str(r["message_id"]): str(r["user_id"]) for r in found}

    def screen_message_ids(self, messages: Sequence[events_pb2.EnrichedMessage]) -> Conflicts:
        """The messages whose id another user's row holds, with their ``MESSAGE_ID_CONFLICT``
        rejections (``mpp.ownership``); reads, never writes."""
        return screen_owners(messages, self.message_owners, self.recent_owners)

    def count_messages(self) -> int:
        with self._op("count_messages") as client:
            if not self._exists(client, self.messages):
                return 0
            result = client.query(
                self.messages.name,
                filter="",
                output_fields=["count(*)"],
                timeout=self._timeout,
                consistency_level="Strong",
            )
        return int(result[0]["count(*)"]) if result else 0

    def user_vectors(self, user_id: str, limit: int = 20) -> list[UserVector]:
        """The user's ``limit`` most recent message vectors, newest first.

        Reads ids and times first (cheap), then only the vectors it returns. Considers at
        most the user's 16,384 messages (Milvus' query window), which bounds the cost of a
        very active user.
        """
        if limit <= 0:
            return []
        with self._op("user_vectors") as client:
            if not self._exists(client, self.messages):
                return []
            stamps = client.query(
                self.messages.name,
                filter=f"user_id == {milvus_string(user_id)}",
                output_fields=["message_id", "ts"],
                limit=MAX_QUERY_ROWS,
                timeout=self._timeout,
                consistency_level="Strong",
            )
            newest = sorted(stamps, key=lambda r: (r["ts"], r["message_id"]), reverse=True)
            ids = [r["message_id"] for r in newest[:limit]]
            if not ids:
                return []
            rows = client.get(
                self.messages.name,
                ids=ids,
                output_fields=[
                    "message_id",
                    "ts",
                    "top_intent",
                    "top_intent_score",
                    "channel",
                    "campaign_id",
                    VECTOR_FIELD,
                ],
                timeout=self._timeout,
            )
        vectors = [
            UserVector(
                message_id=r["message_id"],
                ts_ms=int(r["ts"]),
                embedding=[float(x) for x in r[VECTOR_FIELD]],
                top_intent=r.get("top_intent", ""),
                top_intent_score=float(r.get("top_intent_score", 0.0)),
                channel=r.get("channel", ""),
                campaign_id=r.get("campaign_id", ""),
            )
            for r in rows
        ]
        vectors.sort(key=lambda v: (v.ts_ms, v.message_id), reverse=True)
        return vectors

    def search_campaigns(
        self,
        vector: Sequence[float],
        k: int = 10,
        *,
        now_ms: int | None = None,
        live_only: bool = True,
    ) -> list[CampaignHit]:
        """The ``k`` campaigns nearest to ``vector``, best first.

        With ``live_only`` (the default), only active campaigns within their dates at
        ``now_ms`` (default: now) are candidates.
        """
        if k <= 0:
            return []
        if self._dim is not None and len(vector) != self._dim:
            raise DimensionMismatchError(
                f"search vector has {len(vector)} dimensions; collection "
                f"{self.campaigns.name!r} holds {self._dim}-dimensional vectors"
            )
        expr = ""
        if live_only:
            now = int(time.time() * 1000) if now_ms is None else now_ms
            expr = f"active == true and starts_at <= {now} and (ends_at == 0 or ends_at > {now})"
        with self._op("search_campaigns") as client:
            if not self._exists(client, self.campaigns):
                return []
            results = client.search(
                self.campaigns.name,
                data=[list(vector)],
                limit=k,
                filter=expr,
                output_fields=["campaign_id"],
                timeout=self._timeout,
            )
        hits = results[0] if results else []
        return [CampaignHit(str(h["id"]), float(h["distance"])) for h in hits]

    def campaign_vectors(self) -> dict[str, np.ndarray]:
        """Every campaign's vector by campaign_id (the first 16,384: Milvus' query window)."""
        with self._op("campaign_vectors") as client:
            if not self._exists(client, self.campaigns):
                return {}
            rows = client.query(
                self.campaigns.name,
                filter="",
                output_fields=["campaign_id", VECTOR_FIELD],
                limit=MAX_QUERY_ROWS,
                timeout=self._timeout,
            )
        return {str(r["campaign_id"]): np.asarray(r[VECTOR_FIELD], dtype=np.float32) for r in rows}
