"""Enrichment: validated messages -> embedded, intent-tagged, campaign-linked messages.

The pure part of the embedder (``mpp_embedder``), shared with the batch backfill
(``mpp_jobs.embed``): ``Enricher.enrich`` depends only on the messages, the model and the
catalogs it was given, so a message enriched twice comes out the same (but for
``enriched_at``). It reads no topic and writes no store.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime

from prometheus_client import Counter, Histogram

from mpp.config import Settings
from mpp.embedding import Embedder
from mpp.intents import CampaignLinker, IntentCatalog, IntentClassifier, LinkSource
from mpp.logs import get_logger
from mpp.v1 import events_pb2 as pb

# The service whose metrics these are: the embedder (a batch job that enriches counts there
# too, in its own process, where nobody scrapes them).
SERVICE = "embedder"

log = get_logger(__name__)


ENCODE_SECONDS = Histogram(
    "mpp_embedder_encode_seconds",
    "Time to embed one batch of messages.",
    ["service"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
INTENTS_TAGGED = Counter(
    "mpp_embedder_intents_total",
    "Messages by their best intent (or unknown).",
    ["service", "intent"],
)
CAMPAIGN_LINKS = Counter(
    "mpp_embedder_campaign_links_total", "Campaign links written, by source.", ["service", "source"]
)

_LINK_SOURCES = {
    LinkSource.EVENT: pb.CAMPAIGN_LINK_SOURCE_EVENT,
    LinkSource.SIMILARITY: pb.CAMPAIGN_LINK_SOURCE_SIMILARITY,
}


class Enricher:
    """Embeds, tags and links a batch of validated messages (the embedder's pure part)."""

    def __init__(
        self, embedder: Embedder, classifier: IntentClassifier, linker: CampaignLinker
    ) -> None:
        self.embedder = embedder
        self.classifier = classifier
        self.linker = linker

    def enrich(self, messages: Sequence[pb.ValidatedMessage]) -> list[pb.EnrichedMessage]:
        """One EnrichedMessage per message, in order, from one ``encode`` call for all."""
        if not messages:
            return []
        started = time.perf_counter()
        vectors = self.embedder.encode([m.text for m in messages])
        ENCODE_SECONDS.labels(SERVICE).observe(time.perf_counter() - started)
        intents = self.classifier.classify_vectors(vectors)
        links = self.linker.link_vectors(vectors, [m.campaign_id for m in messages])
        enriched_at = datetime.now(UTC)
        out = []
        for message, vector, tags, campaign_links in zip(
            messages, vectors, intents, links, strict=True
        ):
            enriched = pb.EnrichedMessage(
                model=self.embedder.model_id, dimension=self.embedder.dimension
            )
            enriched.message.CopyFrom(message)
            enriched.embedding.extend(vector.tolist())
            enriched.intents.extend(pb.IntentScore(intent=t.intent, score=t.score) for t in tags)
            enriched.campaigns.extend(
                pb.CampaignLink(
                    campaign_id=link.campaign_id,
                    score=link.score,
                    source=_LINK_SOURCES[link.source],
                )
                for link in campaign_links
            )
            enriched.enriched_at.FromDatetime(enriched_at)
            INTENTS_TAGGED.labels(SERVICE, tags[0].intent).inc()
            for link in campaign_links:
                CAMPAIGN_LINKS.labels(SERVICE, link.source.value).inc()
            out.append(enriched)
        return out


def build_enricher(settings: Settings, embedder: Embedder | None = None) -> Enricher:
    """The enricher ``settings.embedder`` describes: its model (``embedder`` when given, one
    loaded model shared), the intent catalog it names (else the packaged one) and a campaign
    linker with no campaigns yet (``linker.update`` gives it the catalog)."""
    cfg = settings.embedder
    embedder = embedder or Embedder.from_settings(cfg)
    intents = (
        IntentCatalog.load(cfg.intent_catalog) if cfg.intent_catalog else IntentCatalog.default()
    )
    classifier = IntentClassifier(
        embedder,
        intents,
        cfg.intent_threshold,
        max_intents=cfg.max_intents,
        secondary_confidence=cfg.secondary_intent_confidence,
    )
    linker = CampaignLinker(
        embedder, threshold=cfg.campaign_link_threshold, max_links=cfg.max_campaign_links
    )
    log.info(
        "intent_catalog_loaded",
        source=intents.source,
        intents=len(intents.names),
        examples=intents.size,
    )
    return Enricher(embedder, classifier, linker)
