"""Trace context through the handlers, without a broker: each record's span is a child of the
span that produced it, outputs and dead letters carry that record span's context, and a store
write is one span per batch linked to the records' spans.

The sink records what ``TrackedProducer`` would put in the headers (``inject_headers`` at the
moment of the produce); spans go to the SDK's in-memory exporter.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Message
from mpp_analytics.service import build_handler as analytics_handler
from mpp_embedder.service import build_handler as embedder_handler
from mpp_ingest.service import build_handler as ingest_handler
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mpp import tracing, writers
from mpp.analytics import WriteResult
from mpp.config import Settings
from mpp.deadletters import DeadLetters
from mpp.v1 import events_pb2 as E
from tests.otel import OTEL_VARS, clean_tracing, trace_into_memory
from tests.unit.records import enriched


class TracedSink:
    """Records (topic, the trace headers the record would carry)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, bytes]]] = []

    def produce(self, topic: str, value: bytes, key: bytes | str | None = None) -> None:
        self.records.append((topic, dict(tracing.inject_headers(None))))


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    with clean_tracing(monkeypatch):
        yield trace_into_memory(monkeypatch, "test")


def produced_by(span_name: str, n: int) -> list[tuple[Any, list[tuple[str, bytes]]]]:
    """``n`` records' headers, each produced under a span of its own (the upstream service)."""
    out = []
    for _ in range(n):
        with tracing.get_tracer("upstream").start_as_current_span(span_name) as span:
            out.append((span.get_span_context(), tracing.inject_headers(None)))
    return out


def span_id_of(traceparent: bytes) -> int:
    return int(traceparent.decode().split("-")[2], 16)


def by_name(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def test_ingest_output_and_dead_letter_continue_the_producers_trace(
    spans: InMemorySpanExporter,
) -> None:
    settings = Settings()
    topics = settings.kafka.topics
    (good_ctx, good_headers), (bad_ctx, bad_headers) = produced_by("produce", 2)
    good = json.dumps({"user_id": "u1", "message": "hi", "timestamp": 1_780_000_000_000})
    batch = [
        Message(topic=topics.raw, partition=0, offset=0, value=good.encode(), headers=good_headers),
        Message(topic=topics.raw, partition=0, offset=1, value=b"{", headers=bad_headers),
    ]
    sink = TracedSink()
    ingest_handler(settings, sink)(batch)

    processed = {s.parent.span_id: s for s in by_name(spans, f"{topics.raw} process") if s.parent}
    assert set(processed) == {good_ctx.span_id, bad_ctx.span_id}
    good_span, bad_span = processed[good_ctx.span_id], processed[bad_ctx.span_id]
    assert good_span.context.trace_id == good_ctx.trace_id
    assert good_span.attributes is not None and good_span.attributes["mpp.message_id"]
    assert good_span.attributes["messaging.kafka.offset"] == 0
    (out_topic, out), (dlq_topic, dead) = sorted(
        sink.records, key=lambda r: r[0] != topics.validated
    )
    assert (out_topic, dlq_topic) == (topics.validated, topics.dlq)
    # The output's parent is the record's processing span; the dead letter's too.
    assert span_id_of(out["traceparent"]) == good_span.context.span_id
    assert span_id_of(dead["traceparent"]) == bad_span.context.span_id


def test_writer_batch_span_names_the_store_and_links_every_record(
    spans: InMemorySpanExporter,
) -> None:
    settings = Settings()
    topics = settings.kafka.topics
    produced = produced_by("enrich", 3)
    values = [enriched("m1", "u1"), enriched("m2", "u2"), b"\x00not protobuf"]
    batch = [
        Message(topic=topics.enriched, partition=0, offset=i, value=v, headers=h)
        for i, (v, (_, h)) in enumerate(zip(values, produced, strict=True))
    ]
    written: list[object] = []
    sink = TracedSink()
    handler = writers.WriterHandler(
        settings,
        "vector-writer",
        sink,
        writers.check_ids,
        writers.StoreWriter(list, written.append, None, "milvus", "upsert"),
        erase=lambda user: 0,
    )
    handler(batch)

    assert len(written) == 1
    records = by_name(spans, f"{topics.enriched} process")
    assert sorted(s.parent.span_id for s in records if s.parent) == sorted(
        ctx.span_id for ctx, _ in produced
    )
    (write,) = by_name(spans, "milvus upsert")
    assert write.attributes is not None
    assert write.attributes["mpp.store"] == "milvus"
    assert write.attributes["mpp.batch.size"] == 2
    linked = {link.context.span_id for link in write.links}
    kept = {
        s.context.span_id
        for s in records
        if s.parent and s.parent.span_id != produced[2][0].span_id
    }
    assert linked == kept and len(linked) == 2
    # The undecodable record's dead letter is in its own record's trace.
    ((dlq, dead),) = sink.records
    assert dlq == topics.dlq
    (bad,) = [s for s in records if s.parent and s.parent.span_id == produced[2][0].span_id]
    assert span_id_of(dead["traceparent"]) == bad.context.span_id


def test_analytics_insert_span_links_the_facts(spans: InMemorySpanExporter) -> None:
    settings = Settings()
    topics = settings.kafka.topics
    produced = produced_by("enrich", 2)
    batch = [
        Message(topic=topics.enriched, partition=0, offset=i, value=v, headers=h)
        for i, (v, (_, h)) in enumerate(
            zip([enriched("m1", "u1"), enriched("m2", "u2")], produced, strict=True)
        )
    ]

    class Store:
        facts = 0

        def write(self, messages: list[Any], feedback: list[Any], *_: Any, **__: Any) -> Any:
            self.facts += len(messages)
            return WriteResult(len(messages), 0, 0, 0, 0, 0)

    store = Store()
    analytics_handler(settings, store, TracedSink())(batch)  # type: ignore[arg-type]
    assert store.facts == 2
    (insert,) = by_name(spans, "postgres insert")
    assert insert.attributes is not None
    assert (insert.attributes["mpp.store"], insert.attributes["mpp.batch.size"]) == ("postgres", 2)
    records = by_name(spans, f"{topics.enriched} process")
    assert {link.context.span_id for link in insert.links} == {s.context.span_id for s in records}


def test_a_dead_letter_sent_outside_any_span_keeps_the_records_trace(
    spans: InMemorySpanExporter,
) -> None:
    settings = Settings()
    ((ctx, headers),) = produced_by("produce", 1)
    msg = Message(topic="t", partition=0, offset=7, value=b"x", headers=headers)
    sink = TracedSink()
    DeadLetters.of(settings.kafka, sink, "ingest").send_failure(msg, RuntimeError("boom"))
    ((_, dead),) = sink.records
    assert dead["traceparent"] == dict(headers)["traceparent"]
    assert span_id_of(dead["traceparent"]) == ctx.span_id


def test_off_the_handlers_add_no_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTEL_VARS:
        monkeypatch.delenv(name, raising=False)
    tracing._reset_for_tests()
    settings = Settings()
    good = json.dumps({"user_id": "u1", "message": "hi", "timestamp": 1_780_000_000_000})
    sink = TracedSink()
    ingest_handler(settings, sink)(
        [Message(topic="raw", partition=0, offset=0, value=good.encode(), headers=None)]
    )
    assert sink.records == [(settings.kafka.topics.validated, {})]


def test_embedder_output_is_the_child_of_its_records_span(spans: InMemorySpanExporter) -> None:
    class Enricher:
        """Stands in for the model: one EnrichedMessage per message, in order."""

        def enrich(self, messages: list[E.ValidatedMessage]) -> list[E.EnrichedMessage]:
            out = []
            for m in messages:
                e = E.EnrichedMessage(embedding=[1.0], dimension=1, model="m")
                e.message.CopyFrom(m)
                e.intents.add(intent="unknown", score=0.0)
                out.append(e)
            return out

    settings = Settings()
    topics = settings.kafka.topics
    produced = produced_by("ingest", 3)
    values = []
    for i in range(2):
        message = E.ValidatedMessage(message_id=f"m{i}", user_id=f"u{i}", text="hello")
        message.timestamp.FromMilliseconds(1_780_000_000_000)
        values.append(message.SerializeToString())
    values.insert(1, E.ValidatedMessage(text="no ids").SerializeToString())
    batch = [
        Message(topic=topics.validated, partition=0, offset=i, value=v, headers=h)
        for i, (v, (_, h)) in enumerate(zip(values, produced, strict=True))
    ]
    sink = TracedSink()
    embedder_handler(settings, sink, Enricher())(batch)  # type: ignore[arg-type]

    records = {
        s.parent.span_id: s for s in by_name(spans, f"{topics.validated} process") if s.parent
    }
    assert set(records) == {ctx.span_id for ctx, _ in produced}
    (first, _), (dead_ctx, _), (second, _) = produced
    outputs = [(t, span_id_of(h["traceparent"])) for t, h in sink.records]
    assert outputs == [
        (topics.dlq, records[dead_ctx.span_id].context.span_id),
        (topics.enriched, records[first.span_id].context.span_id),
        (topics.enriched, records[second.span_id].context.span_id),
    ]
    assert records[second.span_id].attributes is not None
    assert records[second.span_id].attributes["mpp.message_id"] == "m1"
