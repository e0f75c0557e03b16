"""Message and campaign vectors in Milvus: the platform's rules over pymilvus' ``MilvusClient``.

Contracts:
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

Index: FLAT (exact). Measured on Milvus Lite 2.5.1 with 384-dim MiniLM embeddings of real chat
messages, IVF_FLAT was no faster up to 40k rows and at 100k rows returned only 81% of the true
top 10 whatever nprobe was (FLAT: 13.6 ms p50 per search, exact). A full Milvus in production
can use IVF_FLAT or HNSW (``MPP_MILVUS__INDEX_TYPE``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import numpy as np
from numpy.typing import NDArray
from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import MilvusException

from mpp.config import Settings
from mpp.kafka import RetryableError
from mpp.logs import get_logger
from mpp.observability import store_operation, store_rows
from mpp.ownership import Conflicts, RecentOwners, screen_owners
from mpp.stores import milvus_client
from mpp.v1 import events_pb2
from mpp.writers import MAX_ID_CHARS

log = get_logger(__name__)

# Metrics: mpp_store_operations_total, mpp_store_operation_duration_seconds and
# mpp_store_rows_total with store="milvus" (``mpp.observability``).
STORE = "milvus"

# VARCHAR limits of the schema. Ingest allows ids of at most 128 characters; the margin lets
# a producer's id grow without a schema change. (Milvus Lite does not enforce max_length;
# a full Milvus does, so callers check before writing.)
MAX_SHORT_CHARS = 64
MAX_NAME_CHARS = 256
# Milvus caps a query's result window (offset + limit) at 16,384 rows.
MAX_QUERY_ROWS = 16_384
# Milvus Lite 2.5.1 shows a write to readers (and to deletes by filter) about 10 ms after the
# upsert returned, even at Strong consistency: a re-upserted row is briefly missing, and a
# delete must look again after this long.
VISIBILITY_LAG_S = 0.05

_TRANSIENT_GRPC = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
    }
)
# pymilvus' own codes: 2 is "Fail connecting to server", 8 a rate limit.
_CONNECT_FAILED = 2
_RATE_LIMIT = 8
_COLLECTION_NOT_FOUND = 100

T = TypeVar("T")


class DimensionMismatchError(RuntimeError):
    """A collection holds vectors of another dimension than the model's. Not retryable."""


class SchemaMismatchError(RuntimeError):
    """An existing collection lacks fields this version writes. Not retryable."""


@dataclass(frozen=True, slots=True)
class MessageVector:
    """One row of the messages collection."""

    message_id: str
    user_id: str
    ts_ms: int
    embedding: Sequence[float] | NDArray[np.float32]
    channel: str = ""
    locale: str = ""
    # The campaign the producer named on the event, "" when none.
    campaign_id: str = ""
    # The best intent ("unknown" below the embedder's threshold), "" when none was tagged.
    top_intent: str = ""
    top_intent_score: float = 0.0
    model: str = ""

    @classmethod
    def from_enriched(cls, enriched: events_pb2.EnrichedMessage) -> MessageVector:
        message = enriched.message
        top = enriched.intents[0] if enriched.intents else None
        return cls(
            message_id=message.message_id,
            user_id=message.user_id,
            ts_ms=message.timestamp.ToMilliseconds(),
            # One C-level copy: about 7x faster than list() and pymilvus takes arrays as is.
            embedding=np.array(enriched.embedding, dtype=np.float32),
            channel=message.channel,
            locale=message.locale,
            campaign_id=message.campaign_id,
            top_intent=top.intent if top else "",
            top_intent_score=float(top.score) if top else 0.0,
            model=enriched.model,
        )

    def row(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "user_id": self.user_id,
            "ts": self.ts_ms,
            "channel": self.channel,
            "locale": self.locale,
            "campaign_id": self.campaign_id,
            "top_intent": self.top_intent,
            "top_intent_score": self.top_intent_score,
            "model": self.model,
            # from_enriched already made a list; copy only other sequences.
            "embedding": _vector_value(self.embedding),
        }


@dataclass(frozen=True, slots=True)
class CampaignVector:
    """One row of the campaigns collection (the embedding of the campaign's description)."""

    campaign_id: str
    embedding: Sequence[float] | NDArray[np.float32]
    active: bool = True
    # Epoch ms, 0 when the campaign has no start (or no end).
    starts_at_ms: int = 0
    ends_at_ms: int = 0
    model: str = ""

    def row(self) -> dict[str, Any]:
        return {
            "campaign_id": self.campaign_id,
            "active": self.active,
            "starts_at": self.starts_at_ms,
            "ends_at": self.ends_at_ms,
            "model": self.model,
            # from_enriched already made a list; copy only other sequences.
            "embedding": _vector_value(self.embedding),
        }


@dataclass(frozen=True, slots=True)
class UserVector:
    """A user's message vector as the recommender reads it back."""

    message_id: str
    ts_ms: int
    embedding: list[float]
    top_intent: str = ""
    top_intent_score: float = 0.0
    channel: str = ""
    campaign_id: str = ""


@dataclass(frozen=True, slots=True)
class CampaignHit:
    campaign_id: str
    # Cosine similarity, higher is closer.
    score: float


@dataclass(frozen=True)
class _Collection:
    name: str
    # Scalar fields other than the primary key: name -> (type, max_length or None).
    scalars: dict[str, tuple[DataType, int | None]] = field(default_factory=dict)
    primary: str = ""


_MESSAGE_SCALARS: dict[str, tuple[DataType, int | None]] = {
    "user_id": (DataType.VARCHAR, MAX_ID_CHARS),
    "ts": (DataType.INT64, None),
    "channel": (DataType.VARCHAR, MAX_SHORT_CHARS),
    "locale": (DataType.VARCHAR, MAX_SHORT_CHARS),
    "campaign_id": (DataType.VARCHAR, MAX_ID_CHARS),
    "top_intent": (DataType.VARCHAR, MAX_NAME_CHARS),
    "top_intent_score": (DataType.FLOAT, None),
    "model": (DataType.VARCHAR, MAX_NAME_CHARS),
}
_CAMPAIGN_SCALARS: dict[str, tuple[DataType, int | None]] = {
    "active": (DataType.BOOL, None),
    "starts_at": (DataType.INT64, None),
    "ends_at": (DataType.INT64, None),
    "model": (DataType.VARCHAR, MAX_NAME_CHARS),
}
VECTOR_FIELD = "embedding"


def milvus_string(value: str) -> str:
    """A Milvus filter-expression string literal (Milvus Lite 2.5.1 fails filter_params)."""
    return json.dumps(value, ensure_ascii=False)


def is_transient(exc: BaseException) -> bool:
    """True when retrying the same request later may succeed (server down, slow, busy)."""
    if isinstance(exc, grpc.RpcError):
        return exc.code() in _TRANSIENT_GRPC
    if isinstance(exc, MilvusException):
        code = exc.code
        if exc.retriable or code in (_CONNECT_FAILED, _RATE_LIMIT):
            return True
        if isinstance(code, grpc.StatusCode):
            return code in _TRANSIENT_GRPC
        return "Retry timeout" in str(exc.message)
    return isinstance(exc, ConnectionError | TimeoutError)


def _vector_value(vector: Sequence[float] | NDArray[np.float32]) -> Any:
    """What pymilvus is given for a vector: a float32 array or a list, never copied again."""
    return vector if isinstance(vector, list | np.ndarray) else list(vector)


def chunks(rows: Sequence[T], dim: int, max_bytes: int) -> Iterator[Sequence[T]]:
    """Slices of ``rows`` whose vectors (4 bytes a float) stay within ``max_bytes``."""
    size = max(1, max_bytes // max(1, dim * 4))
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


class VectorStore:
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
        self.messages = _Collection(self._cfg.messages_collection, _MESSAGE_SCALARS, "message_id")
        self.campaigns = _Collection(
            self._cfg.campaigns_collection, _CAMPAIGN_SCALARS, "campaign_id"
        )

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
            except (DimensionMismatchError, SchemaMismatchError):
                raise
            except MilvusException as exc:
                if exc.code == _COLLECTION_NOT_FOUND:
                    # Dropped while we ran: forget what we ensured, so the retry recreates it.
                    self._dim = None
                    raise RetryableError(
                        f"milvus {operation}: collection missing ({exc})", STORE
                    ) from exc
                if is_transient(exc):
                    raise RetryableError(f"milvus {operation}: {exc.message}", STORE) from exc
                raise
            except Exception as exc:
                if is_transient(exc):
                    raise RetryableError(f"milvus {operation}: {exc}", STORE) from exc
                raise

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
                if client.has_collection(collection.name, timeout=self._timeout):
                    self._check_existing(client, collection, dim)
                else:
                    self._create(client, collection, dim)
                state = client.get_load_state(collection.name, timeout=self._timeout)
                if str(state.get("state")) != "Loaded":
                    client.load_collection(collection.name, timeout=self._timeout)
        self._dim = dim

    def _create(self, client: MilvusClient, collection: _Collection, dim: int) -> None:
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(
            collection.primary, DataType.VARCHAR, is_primary=True, max_length=MAX_ID_CHARS
        )
        for name, (dtype, max_length) in collection.scalars.items():
            if max_length is None:
                schema.add_field(name, dtype)
            else:
                schema.add_field(name, dtype, max_length=max_length)
        schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=dim)
        index = client.prepare_index_params()
        index.add_index(VECTOR_FIELD, metric_type="COSINE", **self._index_args())
        try:
            client.create_collection(
                collection.name, schema=schema, index_params=index, timeout=self._timeout
            )
        except MilvusException:
            # Another writer may have created it meanwhile; then it must fit.
            if not client.has_collection(collection.name, timeout=self._timeout):
                raise
            self._check_existing(client, collection, dim)
            return
        log.info("milvus_collection_created", collection=collection.name, dim=dim)

    def _index_args(self) -> dict[str, Any]:
        kind = self._cfg.index_type
        if kind == "IVF_FLAT":
            return {"index_type": kind, "params": {"nlist": self._cfg.ivf_nlist}}
        if kind == "HNSW":
            return {"index_type": kind, "params": {"M": 16, "efConstruction": 200}}
        return {"index_type": "FLAT"}

    def _check_existing(self, client: MilvusClient, collection: _Collection, dim: int) -> None:
        described = client.describe_collection(collection.name, timeout=self._timeout)
        fields = {f["name"]: f for f in described.get("fields", [])}
        vector = fields.get(VECTOR_FIELD)
        existing_dim = int(vector.get("params", {}).get("dim", 0)) if vector else 0
        if existing_dim != dim:
            setting = (
                "MPP_MILVUS__MESSAGES_COLLECTION"
                if collection is self.messages
                else "MPP_MILVUS__CAMPAIGNS_COLLECTION"
            )
            raise DimensionMismatchError(
                f"Milvus collection {collection.name!r} holds {existing_dim}-dimensional "
                f"vectors but the model produces {dim}-dimensional ones. Set {setting} to "
                f"another name (for example {collection.name}_{dim}), or drop the collection "
                f"{collection.name!r} so that it is recreated (its vectors cannot be compared "
                "with another model's)."
            )
        missing = sorted(
            {collection.primary, *collection.scalars} - set(fields),
        )
        if missing:
            raise SchemaMismatchError(
                f"Milvus collection {collection.name!r} lacks the field(s) {', '.join(missing)} "
                "that this version writes; drop it so that it is recreated, or point "
                "MPP_MILVUS__MESSAGES_COLLECTION / MPP_MILVUS__CAMPAIGNS_COLLECTION elsewhere."
            )

    def collection_dimension(self) -> int | None:
        """The messages collection's vector dimension: the one ensured, else the existing
        collection's; None while it does not exist. Raises RetryableError while Milvus is
        away."""
        if self._dim is not None:
            return self._dim
        with self._op("collection_dimension") as client:
            if not client.has_collection(self.messages.name, timeout=self._timeout):
                return None
            described = client.describe_collection(self.messages.name, timeout=self._timeout)
        for described_field in described.get("fields", []):
            if described_field.get("name") == VECTOR_FIELD:
                return int(described_field.get("params", {}).get("dim", 0)) or None
        return None

    def _exists(self, client: MilvusClient, collection: _Collection) -> bool:
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
        if not rows:
            return 0
        dim = self._ensure_for([r.embedding for r in rows])
        data = [r.row() for r in rows]
        with self._op("upsert_messages") as client:
            for part in chunks(data, dim, self._cfg.max_request_bytes):
                client.upsert(self.messages.name, list(part), timeout=self._timeout)
        store_rows(STORE, "upsert_messages", len(data))
        return len(data)

    def upsert_campaigns(self, rows: Sequence[CampaignVector]) -> int:
        """Upsert campaign vectors by campaign_id. Returns the rows written."""
        if not rows:
            return 0
        dim = self._ensure_for([r.embedding for r in rows])
        data = [r.row() for r in rows]
        with self._op("upsert_campaigns") as client:
            for part in chunks(data, dim, self._cfg.max_request_bytes):
                client.upsert(self.campaigns.name, list(part), timeout=self._timeout)
        store_rows(STORE, "upsert_campaigns", len(data))
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
