"""The pipeline's counters as Prometheus sees them, end to end (issue #16).

Ingest and the embedder run as processes on topics and consumer groups of this test's own; the
local Prometheus scrapes their /metrics every second (file service discovery, a job of this
run's own). Raw chat events and invalid events of eight reasons go in; once
the pipeline has drained, Prometheus's query API must give exactly what was sent: records
consumed per service and topic, produced per topic (checked against the topics' own end
offsets too) and dead-lettered per reason.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from mpp.kafka import topic_sizes
from mpp.samples import chitchat_events
from tests.e2e.pipeline import Pipeline, build_replay, log
from tests.observability import Prometheus

pytestmark = pytest.mark.timeout(600)


def test_consumed_produced_and_dead_lettered_in_prometheus_equal_what_was_sent(
    pipeline: Pipeline, prometheus: Prometheus
) -> None:
    # No duplicates: ingest drops a duplicate only when it shares a batch with its first copy,
    # so how many reach the validated topic would depend on the batching.
    replay = build_replay(
        list(chitchat_events(300)), pipeline.run_id, duplicate_share=0, invalid_share=0.1
    )
    invalid_by_reason = Counter(replay.invalid.values())
    assert len(invalid_by_reason) >= 8, invalid_by_reason
    valid = len(replay.records) - len(replay.invalid)
    assert valid == replay.unique_valid

    pipeline.start("ingest", "embedder")
    job = f"e2e-metrics-{pipeline.run_id}"
    prometheus.add_targets(job, [f"127.0.0.1:{p.port}" for p in pipeline.processes.values()])
    pipeline.produce(replay.records, replay.keys)
    pipeline.wait_drained()

    kafka = pipeline.settings.kafka
    topics = kafka.topics
    sizes = {name: records for name, (_, records) in topic_sizes(kafka).items()}
    # Kafka's own account first: every valid record validated, every invalid one dead-lettered.
    assert sizes[topics.raw] == len(replay.records)
    assert sizes[topics.validated] == valid
    assert sizes[topics.dlq] == len(replay.invalid)
    assert sizes[topics.enriched] > 0

    def total(metric: str, **labels: str) -> str:
        selector = ",".join(f'{k}="{v}"' for k, v in {"job": job, **labels}.items())
        return f"sum({metric}{{{selector}}})"

    expected = {
        total("mpp_records_consumed_total", service="ingest", topic=topics.raw): len(
            replay.records
        ),
        total("mpp_records_produced_total", service="ingest", topic=topics.validated): valid,
        total("mpp_records_produced_total", service="ingest", topic=topics.dlq): len(
            replay.invalid
        ),
        total("mpp_records_dead_lettered_total", service="ingest"): len(replay.invalid),
        total("mpp_records_consumed_total", service="embedder", topic=topics.validated): valid,
        total("mpp_records_produced_total", service="embedder", topic=topics.enriched): sizes[
            topics.enriched
        ],
    }
    for reason, count in invalid_by_reason.items():
        expected[total("mpp_records_dead_lettered_total", service="ingest", reason=reason)] = count
    started = time.monotonic()
    for expr, value in expected.items():
        prometheus.wait_for(expr, lambda v, value=value: v >= value, timeout_s=60)
    # Two more scrapes: a counter past its expected value would show now.
    time.sleep(2.5)
    seen = {expr: prometheus.value(expr) for expr in expected}
    assert seen == {expr: float(value) for expr, value in expected.items()}
    # Only the reasons sent: no other dead letters, none from the embedder.
    reasons = {
        r["metric"]["reason"]: float(r["value"][1])
        for r in prometheus.query(
            f'sum by (reason) (mpp_records_dead_lettered_total{{job="{job}",service="ingest"}})'
        )
    }
    assert reasons == {reason: float(count) for reason, count in invalid_by_reason.items()}
    embedder_dead = prometheus.value(total("mpp_records_dead_lettered_total", service="embedder"))
    assert embedder_dead in (None, 0.0)
    log(
        f"prometheus: {len(replay.records)} records, {valid} valid, {len(replay.invalid)} "
        f"dead-lettered over {len(invalid_by_reason)} reasons, {sizes[topics.enriched]} "
        f"enriched; counters settled {time.monotonic() - started:.1f}s after the drain"
    )
