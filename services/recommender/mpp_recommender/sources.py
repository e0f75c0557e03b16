"""The three candidate sources, each a plain synchronous call bounded by its client's timeout.

- ``MilvusSource``: the user vector (recency-weighted mean of the user's recent message vectors,
  from the Redis session and Milvus) searched against the live campaign vectors. Each item names
  the user's message closest to the campaign.
- ``Neo4jSource``: the campaigns the user's intents point to (the catalog's ``intents``), the
  campaigns the user's own messages are ABOUT, and the campaigns engaged by users who share the
  user's intents or campaigns (co-engagement).
- ``PostgresSource`` (``mpp_recommender.postgres_source``): the catalog, popularity and
  performance, and the user's rules (conversions, dismissals, today's impressions).

The Milvus and Neo4j sources only compose the stores' reads (``mpp.stores.milvus``,
``mpp.stores.neo4j``) into candidates with their reasons.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mpp.config import Settings
from mpp.logs import get_logger
from mpp.stores.clients import neo4j_driver
from mpp.stores.milvus import MilvusVectorStore
from mpp.stores.neo4j import Neo4jGraphStore
from mpp_recommender.blend import (
    CampaignInfo,
    Candidate,
    Reason,
    TimedVector,
    user_vector,
)
from mpp_recommender.cache import SessionMessage

# The PostgreSQL source has a module of its own; its names stay importable from here.
from mpp_recommender.postgres_source import PostgresSource, popularity_candidates, rules_from_rows

__all__ = [
    "MilvusSource",
    "Neo4jSource",
    "PostgresSource",
    "SourceAnswer",
    "popularity_candidates",
    "rules_from_rows",
]

log = get_logger(__name__)


@dataclass(slots=True)
class SourceAnswer:
    candidates: list[Candidate] = field(default_factory=list)
    # Did the source hold anything about this user (messages)?
    knows_user: bool = False
    # Milvus: the user's recent messages it read (newest first), for the Redis session.
    recent: list[SessionMessage] | None = None


# -- Milvus -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Recent:
    message_id: str
    ts_ms: int
    embedding: np.ndarray
    intent: str


class MilvusSource:
    name = "milvus"

    def __init__(self, settings: Settings) -> None:
        cfg = settings.recommender
        # The recommender waits at most its own deadline, so its client gives up soon after.
        milvus = settings.milvus.model_copy(update={"timeout_s": max(cfg.milvus_timeout_s, 1.0)})
        self.store = MilvusVectorStore(settings.model_copy(update={"milvus": milvus}))
        self._k = cfg.candidates_per_source
        self._recent = cfg.recent_messages
        self._half_life_s = cfg.recency_half_life_s
        self._refresh_s = cfg.catalog_refresh_s
        self._campaign_vectors: dict[str, np.ndarray] = {}
        self._vectors_read_at = -math.inf
        self._lock = threading.Lock()

    def prepare(self, dim: int | None = None) -> None:
        """Outside requests: learn the collections' dimension (so that reads skip a
        has_collection call each) and read the campaign vectors. ``dim`` None: from the
        campaigns collection, when it exists."""
        if self.store.dimension is not None:
            return
        if dim is None:
            dim = self.store.collection_dimension(self.store.campaigns)
            if dim is None:
                return
        self.store.ensure_collections(dim)
        # Milvus Lite answers the first search of a collection in ~0.4 s (then ~1 ms): pay it
        # here rather than in a request's 0.25 s.
        self.store.search_campaigns([1.0 / math.sqrt(dim)] * dim, k=1)
        self._vectors_read_at = -math.inf
        self.campaign_vectors()

    def campaign_vectors(self) -> dict[str, np.ndarray]:
        """The campaigns' vectors for explanations, re-read every ``catalog_refresh_s``."""
        now = time.monotonic()
        if now - self._vectors_read_at < self._refresh_s:
            return self._campaign_vectors
        with self._lock:
            if now - self._vectors_read_at < self._refresh_s:
                return self._campaign_vectors
            self._vectors_read_at = now
            try:
                self._campaign_vectors = self.store.campaign_vectors()
            except Exception as exc:
                log.warning("campaign_vectors_unavailable", error=str(exc))
        return self._campaign_vectors

    def recommend(
        self, user_id: str, session: Sequence[SessionMessage], complete: bool = False
    ) -> SourceAnswer:
        """``complete``: the session already holds the user's recent messages from Milvus."""
        by_id: dict[str, SessionMessage] = {m.message_id: m for m in session}
        read = not complete and len(by_id) < self._recent
        if read:
            for v in self.store.user_vectors(user_id, limit=self._recent):
                intent = v.top_intent if v.top_intent not in ("", "unknown") else ""
                by_id.setdefault(
                    v.message_id,
                    SessionMessage(
                        v.message_id,
                        v.ts_ms,
                        np.asarray(v.embedding, dtype=np.float32),
                        ((intent, v.top_intent_score),) if intent else (),
                    ),
                )
        ordered = sorted(by_id.values(), key=lambda m: (m.ts_ms, m.message_id), reverse=True)
        ordered = ordered[: self._recent]
        newest = [
            _Recent(m.message_id, m.ts_ms, m.embedding, m.intents[0][0] if m.intents else "")
            for m in ordered
        ]
        vector = user_vector([TimedVector(r.ts_ms, r.embedding) for r in newest], self._half_life_s)
        if vector is None:
            return SourceAnswer(recent=ordered if read else None)
        hits = self.store.search_campaigns(vector.tolist(), k=self._k)
        campaign_vectors = self.campaign_vectors()
        matrix = np.stack([r.embedding for r in newest])
        candidates = []
        for hit in hits:
            best = newest[0]
            cosine = hit.score
            campaign_vector = campaign_vectors.get(hit.campaign_id)
            if campaign_vector is not None and len(campaign_vector) == matrix.shape[1]:
                sims = matrix @ campaign_vector
                index = int(np.argmax(sims))
                best, cosine = newest[index], float(sims[index])
            candidates.append(
                Candidate(
                    hit.campaign_id,
                    hit.score,
                    [
                        Reason(
                            "milvus",
                            "similar_to_messages",
                            f"your recent messages are close to the campaign (cosine "
                            f"{hit.score:.2f}); closest: message {best.message_id} "
                            f"(cosine {cosine:.2f})",
                            hit.score,
                            intent=best.intent,
                            message_id=best.message_id,
                        )
                    ],
                )
            )
        return SourceAnswer(candidates, knows_user=True, recent=ordered if read else None)

    def close(self) -> None:
        self.store.close()


# -- Neo4j --------------------------------------------------------------------------------------


class Neo4jSource:
    name = "neo4j"

    def __init__(self, settings: Settings, catalog: Callable[[], Mapping[str, CampaignInfo]]):
        rec = settings.recommender
        # Reads wait at most the request's deadline, and are not retried (the breaker is).
        self.driver = neo4j_driver(
            settings,
            connection_timeout=max(rec.neo4j_timeout_s, 0.5),
            connection_acquisition_timeout=max(rec.neo4j_timeout_s * 2, 1.0),
            max_transaction_retry_time=0,
        )
        self.store = Neo4jGraphStore(
            settings, driver=self.driver, read_timeout_s=max(rec.neo4j_timeout_s * 4, 1.0)
        )
        self._recent = rec.recent_messages
        self._k = rec.candidates_per_source
        self._catalog = catalog

    def warm_up(self) -> None:
        """Run the reads once, so that Neo4j has planned them before the first request."""
        self.store.warm_up()

    def recommend(self, user_id: str, session: Sequence[SessionMessage]) -> SourceAnswer:
        graph = self.store.user_graph(user_id, self._recent, per_node=50, peers=100, limit=self._k)
        messages = graph.messages
        # intent -> (score, message_id), campaign -> (score, message_id); the session adds
        # messages the graph-writer has not written yet.
        intents: dict[str, tuple[float, str]] = {}
        about: dict[str, tuple[float, str]] = {}

        def note(target: dict[str, tuple[float, str]], key: Any, score: Any, mid: str) -> None:
            if key is None or key == "unknown":
                return
            value = float(score or 0.0)
            if key not in target or value > target[key][0]:
                target[str(key)] = (value, mid)

        for graph_message in messages:
            for name, score in graph_message.intents:
                note(intents, name, score, graph_message.message_id)
            for campaign_id, score in graph_message.campaigns:
                note(about, campaign_id, score, graph_message.message_id)
        for message in session:
            for name, score in message.intents:
                note(intents, name, score, message.message_id)
            for campaign_id, score in message.campaigns:
                note(about, campaign_id, score, message.message_id)
        if not messages and not session:
            return SourceAnswer()

        found: dict[str, Candidate] = {}

        def add(campaign_id: str, score: float, reason: Reason) -> None:
            candidate = found.setdefault(campaign_id, Candidate(campaign_id, 0.0))
            candidate.score += score
            candidate.reasons.append(reason)

        for campaign in self._catalog().values():
            for intent in campaign.intents:
                if intent in intents:
                    score, mid = intents[intent]
                    add(
                        campaign.campaign_id,
                        score,
                        Reason(
                            "neo4j",
                            "intent_match",
                            f"you talked about {intent} (message {mid}, score {score:.2f}); "
                            f"the campaign targets {intent}",
                            score,
                            intent=intent,
                            message_id=mid,
                        ),
                    )
        for campaign_id, (score, mid) in about.items():
            add(
                campaign_id,
                score,
                Reason(
                    "neo4j",
                    "about_campaign",
                    f"your message {mid} is about this campaign (score {score:.2f})",
                    score,
                    message_id=mid,
                ),
            )
        if graph.peers:
            most = max(p.peers for p in graph.peers)
            for peer in graph.peers:
                share = 0.5 * peer.peers / most if most else 0.0
                add(
                    peer.campaign_id,
                    share,
                    Reason(
                        "neo4j",
                        "co_engagement",
                        f"{peer.peers} users who share your interest in {peer.via} talked "
                        "about this campaign",
                        share,
                        intent=peer.via,
                    ),
                )
        ranked = sorted(found.values(), key=lambda c: -c.score)[: self._k]
        return SourceAnswer(ranked, knows_user=True)

    def close(self) -> None:
        self.store.close()
