"""The stores' interfaces: what every implementation promises, whatever its backend.

One ``Protocol`` per kind of store (as Feast's online stores have one abstract class per
kind); the implementations subclass it (``mpp.stores.milvus.MilvusVectorStore``,
``mpp.stores.neo4j.Neo4jGraphStore``), so that the type checker holds them to it.

Contracts shared by every store:
- Writes are idempotent by key (``message_id``, ``campaign_id``): replaying a batch leaves the
  same rows, nodes and relationships. A message belongs to the user who sent it first
  (``mpp.ownership``): no write moves it to another user.
- Times are epoch milliseconds, UTC (``*_ms`` fields; ``ts`` in the stores); 0 means "not set"
  where a time is optional. Scores are floats, higher is better.
- A store that is down or too slow raises ``RetryableError`` (``mpp.kafka``) from its writes,
  so that the caller retries; other errors are not worth a retry. ``ping`` never raises.
- ``delete_user`` removes everything the store keeps of a user; idempotent; it returns how
  many messages it removed.
- Stores connect lazily or cheaply: constructing one never waits for its server.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from mpp.ownership import Conflicts
from mpp.stores.graph_rows import GraphCounts, MergeBatch, MessageNode, UserGraph
from mpp.stores.vector_rows import CampaignHit, CampaignVector, MessageVector, UserVector
from mpp.v1 import events_pb2

# Longest id either store keeps (Milvus VARCHAR length), so that both writers keep the same
# messages. Ingest allows ids of at most 128 characters; the margin lets a producer's id grow
# without a schema change.
MAX_ID_CHARS = 256


class Store(Protocol):
    """What every store offers: readiness, erasure, and its release."""

    def ping(self) -> str | None:
        """None when the server answers, else a short reason (for readiness)."""
        ...

    def delete_user(self, user_id: str) -> int:
        """Remove every message of ``user_id``; idempotent. Returns the messages removed."""
        ...

    def close(self) -> None: ...


class VectorStore(Store, Protocol):
    """Message and campaign vectors, compared by cosine similarity.

    - ``upsert_*`` write by primary key; a vector's dimension is the model's, and all the
      vectors of a store have one dimension (the first write decides it).
    - Reads may miss writes of the last few milliseconds; ``delete_user`` does not.
    """

    @property
    def dimension(self) -> int | None:
        """The vector dimension once known to this process, else None."""
        ...

    def upsert_messages(self, rows: Sequence[MessageVector]) -> int:
        """Upsert by message_id. Returns the rows written."""
        ...

    def upsert_campaigns(self, rows: Sequence[CampaignVector]) -> int:
        """Upsert by campaign_id. Returns the rows written."""
        ...

    def message_owners(self, message_ids: Sequence[str]) -> dict[str, str]:
        """message_id -> user_id of those of ``message_ids`` stored."""
        ...

    def screen_message_ids(self, messages: Sequence[events_pb2.EnrichedMessage]) -> Conflicts:
        """The messages whose id another user's row holds (reads, never writes)."""
        ...

    def user_vectors(self, user_id: str, limit: int = 20) -> list[UserVector]:
        """The user's ``limit`` most recent message vectors, newest first."""
        ...

    def search_campaigns(
        self, vector: Sequence[float], k: int = 10, *, now_ms: int | None = None
    ) -> list[CampaignHit]:
        """The ``k`` campaigns nearest to ``vector``, best first: active ones within their
        dates at ``now_ms`` (epoch ms, UTC; default: now). An implementation may offer more
        options (Milvus: ``live_only``)."""
        ...

    def campaign_vectors(self) -> dict[str, np.ndarray]:
        """Every campaign's vector by campaign_id."""
        ...


class GraphStore(Store, Protocol):
    """Users, their messages, and the campaigns and intents the messages point to.

    - A batch is written atomically; a message's links are those of its latest write.
    - The "unknown" intent is not stored: it says that no intent was recognised.
    """

    def merge_messages(self, rows: Sequence[MessageNode]) -> int:
        """Write the messages with their users and links; idempotent. Returns the rows."""
        ...

    def message_owners(self, message_ids: Sequence[str]) -> dict[str, str]:
        """message_id -> user_id of those of ``message_ids`` stored."""
        ...

    def screen_message_ids(self, messages: Sequence[events_pb2.EnrichedMessage]) -> Conflicts:
        """The messages whose id another user's message holds (reads, never writes)."""
        ...

    def merge_batch(self, batch: MergeBatch) -> int:
        """``merge_messages`` of parameters built beforehand. Returns the rows written."""
        ...

    def counts(self, user_ids: Sequence[str]) -> GraphCounts:
        """Users, messages and links among ``user_ids``."""
        ...

    def user_graph(
        self, user_id: str, recent: int, per_node: int, peers: int, limit: int
    ) -> UserGraph:
        """The user's ``recent`` newest messages with their intents and campaigns, and the
        campaigns of the users who share those intents or campaigns, most shared first."""
        ...
