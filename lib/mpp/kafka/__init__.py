"""Kafka for every service: topics, a producer that reports failures, and the batch loop.

- ``mpp.kafka.producer``: ``TrackedProducer``, whose flush raises what the brokers lost;
- ``mpp.kafka.loop``: ``BatchLoop``, its contract in the module's doc; ``mpp.kafka.staged``
  (store writes overlapping the next batch) and ``mpp.kafka.retries`` (backoff, the
  poison-record safety net, commits) are its parts;
- ``mpp.kafka.health``: ``BrokerHealth``, whether a client reaches the brokers;
- ``mpp.kafka.admin``: topics (creation, retention), their sizes, consumer-group lag;
- ``mpp.kafka.testing``: topics of a run's own on a shared broker (tests, benches);
- the error model (``RetryableError``, ``RecordRefused``...) is ``mpp.errors``', re-exported.

Every public name is importable from ``mpp.kafka`` itself.
"""

from __future__ import annotations

from mpp.errors import DeliveryError, RecordRefused, RetryableError, retry_cause
from mpp.kafka.admin import LagReader, ensure_topics, group_lag, topic_sizes
from mpp.kafka.health import BrokerHealth
from mpp.kafka.loop import BatchLoop
from mpp.kafka.producer import Sink, TrackedProducer
from mpp.kafka.retries import RETRYABLE, DeadLetterSink, Handler, LoopStats, position
from mpp.kafka.staged import WRITES_QUEUED, StagedHandler

__all__ = [
    "RETRYABLE",
    "WRITES_QUEUED",
    "BatchLoop",
    "BrokerHealth",
    "DeadLetterSink",
    "DeliveryError",
    "Handler",
    "LagReader",
    "LoopStats",
    "RecordRefused",
    "RetryableError",
    "Sink",
    "StagedHandler",
    "TrackedProducer",
    "ensure_topics",
    "group_lag",
    "position",
    "retry_cause",
    "topic_sizes",
]
