"""The rows of the Milvus collections, as the vector store writes and reads them.

Plain dataclasses, without pymilvus: times are epoch milliseconds, UTC; vectors are the
embedder's unit-normalized float32 values; scores are cosine similarities in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from mpp.v1 import events_pb2

# VARCHAR limits of the schema (the ids': ``mpp.stores.base.MAX_ID_CHARS``). (Milvus Lite
# does not enforce max_length; a full Milvus does, so callers check before writing.)
MAX_SHORT_CHARS = 64
MAX_NAME_CHARS = 256

T = TypeVar("T")


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
            # from_enriched already made an array; copy only other sequences.
            "embedding": vector_value(self.embedding),
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
            "embedding": vector_value(self.embedding),
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


def vector_value(vector: Sequence[float] | NDArray[np.float32]) -> Any:
    """What pymilvus is given for a vector: a float32 array or a list, never copied again."""
    return vector if isinstance(vector, list | np.ndarray) else list(vector)


def chunks(rows: Sequence[T], dim: int, max_bytes: int) -> Iterator[Sequence[T]]:
    """Slices of ``rows`` whose vectors (4 bytes a float) stay within ``max_bytes``."""
    size = max(1, max_bytes // max(1, dim * 4))
    for start in range(0, len(rows), size):
        yield rows[start : start + size]
