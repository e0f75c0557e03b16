"""The Spark embedding job in local mode on real chat messages and deliberately invalid
events: the same ids, vectors, intents and campaign links as the stream's own code computes
for the same events, every invalid event rejected with its reason, the enriched topic fed
with records the analytics service accepts, and a second run that writes nothing."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Consumer, TopicPartition
from mpp_analytics.records import message_fact

from mpp.catalog import default_campaigns_path, parse_campaigns
from mpp.codecs import Rejection, decode_raw_event, parse_timestamp
from mpp.config import Settings
from mpp.embedding import Embedder
from mpp.enrich import build_enricher
from mpp.ids import derive_message_id
from mpp.samples import chitchat_events
from mpp.stack import job_venvs as venvs
from mpp.v1 import events_pb2 as pb
from mpp.validation import Rules, normalize_text, validate_event

from .conftest import BUILD_TIMEOUT_S, REPO, run_python, settings_env

# The first test of a fresh machine builds the jobs' environment in its setup.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(BUILD_TIMEOUT_S)]


def sample_lines(day: datetime) -> list[str]:
    """48 real chat events, crafted valid ones (PII, a producer id and campaign, a campaign's
    own words, a duplicate, one outside the range) and invalid ones, as JSON lines."""
    events: list[Any] = list(chitchat_events(48))
    at = day.replace(hour=12)
    events += [
        {
            "user_id": "batch-u1",
            "message": "Mail me at jane.doe@example.com about   summer flights\tand hotels",
            "timestamp": at.isoformat(),
            "channel": "Web",
        },
        {
            "user_id": "batch-u2",
            "message": "Is the free month of streaming movies and TV shows still on?",
            "timestamp": int(at.timestamp() * 1000) + 1,
            "message_id": "producer-42",
            "campaign_id": "streaming-trial",
            "locale": "en-GB",
        },
        {
            "user_id": "batch-u3",
            "message": "Discounted flights, hotels and beach holidays for my next trip abroad",
            "timestamp": (at + timedelta(minutes=5)).isoformat(),
        },
        events[3],  # the same event twice: one message
        {  # valid, but ten days before the range
            "user_id": "batch-u4",
            "message": "an old message",
            "timestamp": (at - timedelta(days=10)).isoformat(),
        },
    ]
    lines = [json.dumps(e) for e in events]
    lines += [
        json.dumps({"user_id": "", "message": "hello", "timestamp": at.isoformat()}),
        "this is not json",
        json.dumps({"user_id": "batch-u5", "message": " \u200b\t ", "timestamp": at.isoformat()}),
        json.dumps({"user_id": "batch-u6", "message": "no time"}),
        json.dumps({"user_id": "batch-u7", "message": "in seconds", "timestamp": 1700000000}),
        json.dumps({"userId": "batch-u8", "message": "misspelt", "timestamp": at.isoformat()}),
        json.dumps(
            {"user_id": "batch-u9", "message": "hi", "timestamp": at.isoformat(), "channel": "A B"}
        ),
        "",  # blank lines carry no event
    ]
    return lines


def read_topic(settings: Settings, topic: str) -> list[bytes]:
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"batch-test-{os.getpid()}-{datetime.now(UTC).timestamp()}",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        values: list[bytes] = []
        while len(values) < sum(ends.values()):
            batch = consumer.consume(500, timeout=5)
            if not batch:
                break
            values += [v for m in batch if m.error() is None and (v := m.value()) is not None]
        return values
    finally:
        consumer.close()


def test_embedding_job_matches_the_stream_and_a_rerun_writes_nothing(
    topic_settings: Settings, jobs_python: Path, embedder: Embedder, tmp_path: Path
) -> None:
    first_day = parse_timestamp(next(chitchat_events(1))["timestamp"])
    day = datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC)
    lines = sample_lines(day)
    raw = tmp_path / "raw" / "events.jsonl"
    raw.parent.mkdir()
    raw.write_text("\n".join(lines) + "\n", encoding="utf-8")
    now = datetime.now(UTC).replace(microsecond=0)
    # Chat days of the sample: the range covers them all but the crafted old message.
    last = max(parse_timestamp(e["timestamp"]) for e in chitchat_events(48))
    start, end = day.date(), last.date() + timedelta(days=1)

    out_json = tmp_path / "result.json"
    job_args = [
        "--input", str(raw.parent), "--output", str(tmp_path / "out"),
        "--from", start.isoformat(), "--to", end.isoformat(),
        "--campaigns", str(default_campaigns_path()), "--now", now.isoformat(),
        "--partitions", "2", "--kafka", "--master", "local[2]",
    ]  # fmt: skip
    env = venvs.job_env(
        {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", str(tmp_path)),
            **settings_env(topic_settings),
        }
    )
    driver = str(REPO / "tests/batch/embed_driver.py")
    run_python(jobs_python, [driver, str(out_json), "--", *job_args], env)
    result = json.loads(out_json.read_text())

    # What the stream's own code makes of the same lines.
    rules = Rules.from_settings(Settings().ingest)
    valid: dict[str, pb.ValidatedMessage] = {}
    rejected: dict[str, Rejection] = {}
    for line in lines:
        if not line.strip():
            continue
        try:
            message = validate_event(decode_raw_event(line.encode()), rules, now)
        except Rejection as rejection:
            rejected[line] = rejection
            continue
        if start <= message.timestamp.ToDatetime(tzinfo=UTC).date() < end:
            valid.setdefault(message.message_id, message)
    # The sample is what it should be: every invalid line refused, the crafted ones kept.
    assert len(rejected) == 7
    assert {"producer-42"} <= set(valid) and len(valid) >= 50
    old = [m for m in valid.values() if m.user_id == "batch-u4"]
    assert not old  # outside the range

    first, second = result["first"], result["second"]
    rows = {r["message_id"]: r for r in result["enriched"]}
    assert len(rows) == len(result["enriched"])  # one row per message_id
    assert set(rows) == set(valid)
    assert first["written"] == len(valid) and first["produced"] == len(valid)
    assert first["rejected"] == len(rejected)

    # Ids: mpp.ids over (user, epoch ms, normalized text), or the producer's own.
    for line in lines:
        if line.strip() and line not in rejected:
            event = json.loads(line)
            if "message_id" in event:
                continue
            ms = int(parse_timestamp(event["timestamp"]).timestamp() * 1000)
            derived = derive_message_id(event["user_id"], ms, normalize_text(event["message"]))
            assert derived in rows or event["user_id"] == "batch-u4"
    assert rows["producer-42"]["message_id_derived"] is False

    # Validation as ingest does it: text normalized and redacted, channel lower-cased.
    for message_id, message in valid.items():
        row = rows[message_id]
        assert row["text"] == message.text
        assert row["user_id"] == message.user_id
        assert row["channel"] == message.channel
        assert row["timestamp_ms"] == message.timestamp.ToMilliseconds()
        assert row["redactions"] == list(message.redactions)
    u1 = next(r for r in rows.values() if r["user_id"] == "batch-u1")
    assert "[email]" in u1["text"] and u1["redactions"] == ["email"] and u1["channel"] == "web"

    # Vectors: the packaged model's, as Embedder.encode gives them.
    ids = sorted(valid)
    expected = embedder.encode([valid[i].text for i in ids])
    got = np.array([rows[i]["embedding"] for i in ids], dtype=np.float32)
    assert got.shape == (len(ids), embedder.dimension)
    np.testing.assert_allclose(got, expected, atol=2e-5)

    # Intents and campaign links: the embedder service's enrichment of the same messages.
    enricher = build_enricher(Settings(), embedder)
    enricher.linker.update(parse_campaigns(default_campaigns_path()))
    reference = {e.message.message_id: e for e in enricher.enrich([valid[i] for i in ids])}
    for message_id in ids:
        row, ref = rows[message_id], reference[message_id]
        assert [i["intent"] for i in row["intents"]] == [i.intent for i in ref.intents]
        np.testing.assert_allclose(
            [i["score"] for i in row["intents"]], [i.score for i in ref.intents], atol=1e-4
        )
        assert [(c["campaign_id"], c["source"]) for c in row["campaigns"]] == [
            (c.campaign_id, pb.CampaignLinkSource.Name(c.source).rsplit("_", 1)[-1])
            for c in ref.campaigns
        ]
        assert row["model"] == ref.model and row["dimension"] == ref.dimension
    tagged = [r for r in rows.values() if r["intents"][0]["intent"] != "unknown"]
    linked = [c for r in rows.values() for c in r["campaigns"] if c["source"] == "SIMILARITY"]
    assert tagged and linked  # the comparison above covered real tags and links
    assert rows["producer-42"]["campaigns"][0] == {
        "campaign_id": "streaming-trial",
        "score": 1.0,
        "source": "EVENT",
    }

    # Rejects: every invalid line, with the reason ingest gives it, and the line itself.
    rejects = {r["raw"]: r for r in result["rejects"]}
    assert set(rejects) == set(rejected)
    for line, refused in rejected.items():
        reject = rejects[line]
        assert reject["reason"] == pb.ErrorCode.Name(refused.code)  # type: ignore[arg-type]
        assert (reject["field"], reject["detail"]) == (refused.field, refused.detail)
    assert len({r["reason"] for r in rejects.values()}) >= 5

    # The enriched topic holds the same messages, as records the analytics service accepts.
    values = read_topic(topic_settings, topic_settings.kafka.topics.enriched)
    facts = [message_fact(v) for v in values]
    assert sorted(f.message_id for f in facts) == sorted(valid)
    assert {bytes.fromhex(r["enriched"]) for r in rows.values()} == set(values)

    # A second run over the same input: nothing embedded, written, produced or rejected again.
    assert second["written"] == 0 and second["produced"] == 0 and second["rejected"] == 0
    assert second["skipped_existing"] == len(valid)
    assert result["files_after_second"] == result["files_after_first"]
    assert len(read_topic(topic_settings, topic_settings.kafka.topics.enriched)) == len(values)
