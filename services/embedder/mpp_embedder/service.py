"""The embedder: validated messages in, embedded, intent-tagged, campaign-linked messages out.

One batch at a time (``mpp.kafka.BatchLoop`` through ``mpp.service.run_worker``):

1. decode each ``conversations.validated`` record as ``mpp.v1.ValidatedMessage``; a record that
   does not decode, lacks its ids or has ids ingest would refuse, a time out of range or a text
   longer than ingest allows, goes to ``conversations.dlq`` as a ``DeadLetter`` with the original
   bytes and position (any other record the handler fails on too: ``mpp.kafka.BatchLoop``'s
   safety net);
2. embed the whole batch in one ``Embedder.encode`` call;
3. tag intents (``IntentClassifier``) and link campaigns (``CampaignLinker``) from those vectors;
4. produce one ``mpp.v1.EnrichedMessage`` per message to ``conversations.enriched``, keyed by
   user_id. The loop flushes the producer and only then commits the batch's offsets.

Vectors, intents and links depend only on the record and the catalogs, so a batch read twice
after a crash produces the same messages again (but for enriched_at), which the writers'
upserts absorb.

The campaign catalog is read from PostgreSQL at start and every ``catalog_refresh_s``; while
PostgreSQL is unreachable the last catalog read stays in use (empty until the first success):
messages are still enriched, linked only to the campaign their event names.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg
from confluent_kafka import Message
from prometheus_client import Counter, Gauge

from mpp.catalog import Campaign
from mpp.codecs import Rejection, event_time
from mpp.codecs import decode as decode_message
from mpp.config import Settings, get_settings
from mpp.deadletters import DeadLetters
from mpp.embedding import Embedder
from mpp.enrich import Enricher, build_enricher
from mpp.errors import RetryableError
from mpp.intents import UNKNOWN, CampaignLinker
from mpp.kafka import Handler, Sink, TrackedProducer
from mpp.logs import configure_logging, get_logger
from mpp.observability import set_service
from mpp.service import Worker, run_worker
from mpp.stores.campaigns import read_campaigns
from mpp.stores.milvus import MilvusVectorStore
from mpp.stores.vector_rows import CampaignVector
from mpp.tracing import Span, get_tracer, start_record_span, use_span
from mpp.v1 import events_pb2 as pb
from mpp.validation import stored_ids_rejection

SERVICE = "embedder"

log = get_logger(SERVICE)

CATALOG_CAMPAIGNS = Gauge(
    "mpp_embedder_catalog_campaigns",
    "Active campaigns in the catalog the embedder links to.",
    ["service"],
)
CATALOG_REFRESH_FAILURES = Counter(
    "mpp_embedder_catalog_refresh_failures_total",
    "Campaign catalog reads that failed (the previous catalog stayed in use).",
    ["service"],
)


class CampaignCatalog:
    """The campaign catalog, re-read every ``refresh_s``; a failed read keeps the last one."""

    def __init__(
        self,
        load: Callable[[], list[Campaign]],
        refresh_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._refresh_s = refresh_s
        self._clock = clock
        self._next_at = clock()
        self.campaigns: list[Campaign] = []
        self.loaded = False

    def refresh_if_due(self) -> bool:
        """Re-read the catalog when due. True when a read succeeded now."""
        if self._clock() < self._next_at:
            return False
        self._next_at = self._clock() + self._refresh_s
        try:
            campaigns = self._load()
        except (psycopg.Error, OSError) as exc:
            CATALOG_REFRESH_FAILURES.labels(SERVICE).inc()
            log.warning(
                "campaign_catalog_unavailable",
                error=str(exc).strip(),
                kept_campaigns=len(self.campaigns),
                retry_in_s=self._refresh_s,
            )
            return False
        if not self.loaded or campaigns != self.campaigns:
            log.info("campaign_catalog_loaded", campaigns=len(campaigns))
        self.campaigns, self.loaded = campaigns, True
        CATALOG_CAMPAIGNS.labels(SERVICE).set(len(campaigns))
        return True


class CampaignVectors:
    """Writes the linker's campaign embeddings to Milvus whenever the catalog changed.

    The recommender searches a user's vector against them. Milvus being down is not the
    embedder's failure: the write is retried before each later batch until it succeeds.
    """

    def __init__(self, store: MilvusVectorStore | None, model: str) -> None:
        self._store = store
        self._model = model
        self._pending: list[CampaignVector] = []

    def changed(self, linker: CampaignLinker) -> None:
        self._pending = [
            CampaignVector(
                campaign_id=c.campaign_id,
                embedding=vector.tolist(),
                active=c.active,
                starts_at_ms=int(c.starts_at.timestamp() * 1000) if c.starts_at else 0,
                ends_at_ms=int(c.ends_at.timestamp() * 1000) if c.ends_at else 0,
                model=self._model,
            )
            for c, vector in linker.vectors()
        ]
        self.publish()

    def publish(self) -> None:
        if not self._pending or self._store is None:
            return
        try:
            written = self._store.upsert_campaigns(self._pending)
        except RetryableError as exc:
            log.warning("campaign_vectors_not_written", error=str(exc), retry="next batch")
            return
        log.info("campaign_vectors_written", campaigns=written)
        self._pending = []


def decode(msg: Message, max_chars: int = 0) -> pb.ValidatedMessage | Rejection:
    """The record's ValidatedMessage, or the Rejection that explains why there is none.
    ``max_chars``: the longest text taken (ingest's limit); 0: any."""
    try:
        message = decode_message(pb.ValidatedMessage, msg.value())
    except Rejection as rejection:
        return Rejection(
            rejection.code,
            rejection.field,
            f"{rejection.detail}; only the ingest service should write to this topic",
        )
    for field in ("message_id", "user_id"):
        if not getattr(message, field):
            return Rejection(
                pb.ERROR_CODE_SCHEMA_INVALID,
                field,
                f"{field} is empty; ingest always sets it, so this record did not come from ingest",
            )
    refused = stored_ids_rejection(message.user_id, message.message_id)
    if refused is not None:
        return refused
    if not message.HasField("timestamp"):
        return Rejection(
            pb.ERROR_CODE_TIMESTAMP_MISSING,
            "timestamp",
            "timestamp is not set; ingest always sets it",
        )
    try:
        event_time(message.timestamp, "timestamp")
    except Rejection as rejection:
        return rejection
    if max_chars and len(message.text) > max_chars:
        return Rejection(
            pb.ERROR_CODE_MESSAGE_TOO_LONG,
            "text",
            f"text has {len(message.text)} characters; ingest allows {max_chars} "
            "(MPP_INGEST__MAX_MESSAGE_CHARS)",
        )
    return message


def build_handler(
    settings: Settings,
    producer: Sink,
    enricher: Enricher,
    catalog: CampaignCatalog | None = None,
    campaign_vectors: CampaignVectors | None = None,
) -> Handler:
    """The batch handler: decode, enrich, produce. It does not flush: the loop does."""
    topics = settings.kafka.topics
    dead_letters = DeadLetters.of(settings.kafka, producer, SERVICE)
    max_chars = settings.ingest.max_message_chars
    tracer = get_tracer(__name__)

    def handle(batch: list[Message]) -> None:
        if (
            catalog is not None
            and catalog.refresh_if_due()
            and enricher.linker.update(catalog.campaigns)
            and campaign_vectors is not None
        ):
            campaign_vectors.changed(enricher.linker)
        elif campaign_vectors is not None:
            campaign_vectors.publish()
        messages: list[pb.ValidatedMessage] = []
        # Each record's span (a child of its producer's), from its decoding to its output.
        spans: list[Span] = []
        dead = 0
        try:
            for msg in batch:
                span = start_record_span(tracer, msg)
                decoded = decode(msg, max_chars)
                if isinstance(decoded, Rejection):
                    with use_span(span):
                        dead_letters.send(msg, decoded)
                    span.end()
                    dead += 1
                else:
                    messages.append(decoded)
                    spans.append(span)
            enriched = enricher.enrich(messages)
            for message, span in zip(enriched, spans, strict=True):
                span.set_attribute("mpp.message_id", message.message.message_id)
                with use_span(span):
                    producer.produce(
                        topics.enriched, message.SerializeToString(), key=message.message.user_id
                    )
        finally:
            for span in spans:
                span.end()
        unknown = sum(1 for m in enriched if m.intents[0].intent == UNKNOWN)
        log.info(
            "batch_enriched",
            records=len(batch),
            enriched=len(enriched),
            dead=dead,
            unknown_intent=unknown,
        )

    return handle


def build_worker(
    settings: Settings,
    *,
    embedder: Embedder | None = None,
    load_campaigns: Callable[[], list[Campaign]] | None = None,
    store_campaign_vectors: bool = True,
) -> Worker:
    """Everything ``run_worker`` needs; the model and the catalogs are loaded here."""
    enricher = build_enricher(settings, embedder)
    catalog = CampaignCatalog(
        load_campaigns or (lambda: read_campaigns(settings)), settings.embedder.catalog_refresh_s
    )
    campaign_vectors = CampaignVectors(
        MilvusVectorStore(settings) if store_campaign_vectors else None, enricher.embedder.model_id
    )
    if catalog.refresh_if_due() and enricher.linker.update(catalog.campaigns):
        campaign_vectors.changed(enricher.linker)
    producer = TrackedProducer(settings.kafka, SERVICE)
    return Worker(
        name=SERVICE,
        topics=[settings.kafka.topics.validated],
        handler=build_handler(settings, producer, enricher, catalog, campaign_vectors),
        batch_size=settings.embedder.batch_size,
        max_wait_s=settings.embedder.max_wait_s,
        producer=producer,
        dead_letters=DeadLetters.of(settings.kafka, producer, SERVICE),
    )


def main() -> int:
    settings = get_settings()
    # Before the model loads, so that its log lines are structured too.
    configure_logging(settings, SERVICE)
    set_service(SERVICE)
    return run_worker(settings, build_worker(settings))
